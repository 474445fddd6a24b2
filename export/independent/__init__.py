"""An independent rack-scene renderer, for evaluation only.

It is the team's stand-in for a rack nobody has seen: written without looking at the training
generator (`export/synth`), sharing none of its code, and drawing scenes its own way (a pinhole
camera over a 3D rack, mice from parametric outlines, procedural fur and bedding). Frames from it
are never used for training or for choosing anything; they only measure how far a model carries
beyond the generator it learned from (docs/generalisation.md).
"""
