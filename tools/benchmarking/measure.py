"""The benchmark's measurements: wall time (CUDA synchronised), the peak memory of a bundle's load and of one inference
(:class:`PeakMemory`: psutil is not a dependency; it reads ``/proc/self/status`` on Linux), and the FLOPs of one network
evaluation (torch's ``FlopCounterMode`` through :func:`shared_transforms.engine.flops.flop_counter`)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading

import torch

from shared_transforms.engine.flops import flop_counter


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (timings and memory peaks are otherwise those of the launch, not the work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    """Resident set size of this process in bytes, from ``/proc/self/status`` (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except OSError:
        pass
    return 0


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc ``malloc_trim``), so that memory kept
    by earlier work (e.g. scoring) does not hide in, or inflate, the next RSS measurement."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS is then a rougher measure
        pass


class PeakMemory:
    """A bundle's peak memory: what its load keeps plus the largest rise during one inference, in MiB.

    Each ``with meter.window():`` measures the rise of the peak above the level at its start: CUDA
    ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors, not the caching allocator's
    reserve); CPU the process RSS sampled every ``interval_s`` by a background thread (torch releases the GIL in its
    kernels, so it samples during them). The load window (``load=True``) also records what stays allocated after it.
    Result: ``max(load rise, load kept + largest inference rise)``.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.02):
        self.device, self.interval_s = device, interval_s
        self.cuda = device.type == "cuda"
        self.load_rise = self.load_kept = self.inference_rise = 0
        self._peak = 0

    def _level(self) -> int:
        synchronize(self.device)
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        release_free_memory()
        return rss_bytes()

    def _sample(self, stop: threading.Event) -> None:
        while True:
            self._peak = max(self._peak, rss_bytes())
            if stop.wait(self.interval_s):
                return

    @contextlib.contextmanager
    def window(self, load: bool = False):
        """Measure the block's peak rise (``load``: the network build and weight load)."""
        start = self._level()
        self._peak = start
        stop, thread = threading.Event(), None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            thread = threading.Thread(target=self._sample, args=(stop,), daemon=True)
            thread.start()
        try:
            yield self
        finally:
            synchronize(self.device)
            if self.cuda:
                self._peak = max(self._peak, torch.cuda.max_memory_allocated(self.device))
            else:
                stop.set()
                thread.join()
                self._peak = max(self._peak, rss_bytes())
            rise = self._peak - start
            if load:
                self.load_rise, self.load_kept = rise, max(0, self._level() - start)
            else:
                self.inference_rise = max(self.inference_rise, rise)

    @property
    def megabytes(self) -> float:
        """The bundle's peak above the level before its load, in MiB."""
        return max(self.load_rise, self.load_kept + self.inference_rise) / 2**20


# ---------------------------------------------------------------------------------------------------------------------
# arguments


def count_gflop_per_evaluation(network: torch.nn.Module, call: tuple[tuple, dict] | None) -> float | None:
    """GFLOP of one network evaluation: ``network(*args, **kwargs)`` of ``call`` run again under torch's
    ``FlopCounterMode`` (:func:`shared_transforms.engine.flops.flop_counter`), divided by the batch size (the first
    dimension of its first tensor argument: slices, patches or volumes): matrix products, convolutions and attention (2
    FLOPs per multiply-add), not element-wise operations. None without a call (a bundle without a network)."""
    if call is None:
        return None
    args, kwargs = call
    batch = next((int(a.shape[0]) for a in args if torch.is_tensor(a) and a.ndim > 0), 1)
    with flop_counter() as counter, torch.inference_mode():
        network(*args, **kwargs)
    return counter.get_total_flops() / max(batch, 1) / 1e9
