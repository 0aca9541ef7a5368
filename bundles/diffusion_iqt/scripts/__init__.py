"""Python pieces of the ``diffusion_iqt`` bundle (DiffusionIQT: 3D conditional diffusion for image quality
transfer, arXiv 2311.06631)."""
