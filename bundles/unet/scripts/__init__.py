"""Python pieces of the ``unet`` bundle (the supervised baseline: one pass of a 2D U-Net per slice).

- :mod:`.network`: ``ResizeConvUNet``, MONAI's ``UNet`` with resize-convolutions in its decoder (no checkerboard),
  and ``from_transposed_state``, which carries weights of MONAI's ``UNet`` over to it.
"""
