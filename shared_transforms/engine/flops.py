"""Counting a network's floating-point operations: torch's ``FlopCounterMode``, taught the CPU attention kernel.

``FlopCounterMode`` counts convolutions, linear layers and matrix products (2 FLOPs per multiply-add) and the fused
attention kernels it knows; the CPU's ``aten._scaled_dot_product_flash_attention_for_cpu`` is not among them, so the
products q k^T and (softmax) v would be missed on the CPU. :func:`flop_counter` adds that kernel with torch's own
``sdpa_flop_count``. Normalisation, activations and additions are not counted (O(C x pixels)).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` (``get_total_flops()`` after the block) that also counts the CPU attention
    kernel."""
    mapping = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _cpu_sdpa_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)
