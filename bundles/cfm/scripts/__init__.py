"""Python pieces of the ``cfm`` bundle (conditional flow matching for low-field MRI enhancement, arXiv 2510.12408).

- :mod:`.network`: ``CFMUNet``, the velocity network v_theta([x_t, x_low], t) (methods.md A.2), and ``count_flops``.
- :mod:`.flow`: the straight probability path, source/time sampling and the CFM training loss (methods.md A.1).
- :mod:`.solvers`: fixed-step ODE solvers (Euler as the authors, midpoint, Heun) from t=0 to t=1.

The flow is kept separate from the network (torchcfm style): the same network serves every path and solver.
"""
