"""Multi-process runs: this process's rank (:func:`rank_and_world`), and the end of a ``torchrun`` run, where every
process leaves the process group together (:func:`end_process_group`).

``configs/multi_gpu_*.json`` start a process group in ``initialize`` and end it here in ``finalize``. Destroying the
group while another process still uses its connections aborted the process that left first, after its run had
finished: under torchrun with gloo on the CPU, rank 1 died with ``terminate called without an active exception``
(SIGABRT, in the interpreter's teardown) in 1 of 30 runs of cfm's multi-GPU training on tiny data, and in 2 of 13
when rank 0 was made to wait 3 s before destroying the group. With a barrier before the destruction (and rank 0
waiting 3 s after it), none of 20 runs aborted (issue 9). torch has no call that does both.
"""

from __future__ import annotations


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes: ``(0, 1)`` unless a ``torch.distributed`` group is up."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def end_process_group() -> None:
    """Wait for every process of the default group (a barrier), then destroy it; nothing without a group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
