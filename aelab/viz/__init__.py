"""Image grids, latent manifold plots, GIFs and the TensorBoard logger."""
