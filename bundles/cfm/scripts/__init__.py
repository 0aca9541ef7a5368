"""Python pieces of the ``cfm`` bundle (conditional flow matching for low-field MRI enhancement, arXiv 2510.12408).

- :mod:`.network`: ``CFMUNet``, the velocity network v_theta([x_t, x_low], t) (see docs/README.md,
  Method), and ``count_flops``.
- :mod:`.flow`: the straight probability path, source/time sampling and the CFM training loss (docs/README.md, Method).
- the ODE solvers (Euler as the authors, midpoint, Heun) are shared: :mod:`shared_transforms.inference.ode`.

The flow is kept separate from the network (torchcfm style): the same network serves every path and solver.
"""
