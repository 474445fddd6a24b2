"""Training of the shipped networks: segmentation U-Nets (coarse and fine) and the eye regressor.

Imports torch; only the torch-needing `mgs-export` commands import this package.
"""
