"""Synthetic rack frames and videos with exact ground truth (numpy + OpenCV only, no torch).

`rack.render_frame(seed)` renders one labelled 1080x1920 frame, `writer.write_dataset` writes a
dataset in the docs/dataset.md format, `video.write_video` a rack video with per-animal score
trajectories and a ground-truth sidecar. `randomise` (with `scenery`) is the domain randomisation
of dataset frames: presets, restrictable families, and the conditions written into the labels.
Everything is deterministic by seed.
"""
