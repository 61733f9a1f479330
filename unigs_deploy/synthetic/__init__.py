"""Synthetic data made on the fly: the shapes world (images, masks, captions, corrupted
colormaps) and coarse region masks. The demo, training, tests and benchmarks draw on it; the
pipeline never does."""
