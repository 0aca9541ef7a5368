"""Python pieces of the ``flat`` bundle (FLAT: unrolled networks as conditional probability flows for single-coil
accelerated-MRI reconstruction, Qi et al., arXiv 2512.03020; no official code, so what is not an equation of the
paper is our reading, marked in each module).

- :mod:`.network`: ``FLATNet`` (N cascades, flow grid or learned steps), the time grid, the data-consistency
  gradient, the time-conditioned complex U-Net Phi, and ``FLATReconstructor``: the network behind one packed
  tensor ``(B, 3, H, W)`` (masked k-space real/imaginary, sampling mask) for MONAI's engines and the Zoo's checks.
- :mod:`.flow`: the interpolated target ``x*_t = (1 - t) x_0 + t x_1`` and the velocity-alignment loss.
- :mod:`.transforms`: ``UndersampleVolumed``, a magnitude volume to simulated, under-sampled k-space packed as
  ``(3, X, Y, Z)`` (and the complex target for training).
- :mod:`.training`: the trajectory inferer, the target batch and the loss that ``train.json`` gives MONAI's
  ``SupervisedTrainer``.
- the per-cascade study (PSNR of every intermediate image, flow against learned steps), the speed benchmark and the
  results table are in the repository's ``tools/studies/`` (``python tools/study.py flat_cascades``), not here.
- fastMRI single-coil HDF5 reading: :mod:`shared_transforms.kspace.fastmri`; k-space simulation and masks:
  :mod:`shared_transforms.kspace.sampling`.
"""
