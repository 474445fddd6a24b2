"""The choice renderer: a third, self-contained style of synthetic rack frames.

It exists only to choose between model variants on frames that no training frame resembles
(its own mouse model, fur, eye drawing, rack and camera). Never train on its frames and never
use it as the acceptance check. `writer.write_choice` is the entry point; docs/choice-renderer.md
describes what it randomises.
"""
