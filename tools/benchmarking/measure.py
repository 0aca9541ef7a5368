"""The benchmark's measurements: wall time (:class:`Stopwatch`, CUDA synchronised), the machine's reference speed
(:func:`reference_rates`: matrix products in float32 and bfloat16), the peak memory of a bundle's load and of one
inference (:class:`PeakMemory`: psutil is not a dependency; it reads ``/proc/self/status`` on Linux), and the FLOPs of
one network evaluation (torch's ``FlopCounterMode`` through :func:`shared_transforms.engine.flops.flop_counter`)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import threading
import time

import torch

from shared_transforms.engine.flops import flop_counter


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (timings and memory peaks are otherwise those of the launch, not the work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Wall-clock seconds of a block, queued CUDA work waited for at both ends (the one timer of the benchmark, the
    sweep and the studies)::

        with Stopwatch(device) as watch:
            inferer(x, network)
        watch.seconds
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an ``n x n`` matrix product in ``dtype`` on ``device`` (after 2 untimed products)."""
    gen = torch.Generator().manual_seed(0)  # the values do not matter; the seed keeps the run repeatable
    a, b = (torch.randn(n, n, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    with Stopwatch(device) as watch:
        for _ in range(repeats):
            a @ b
    return 2 * n**3 * repeats / watch.seconds / 1e9


@functools.cache
def reference_rates(device: torch.device) -> dict[str, float]:
    """The machine's reference speed, measured once per process and device: ``{"float32": GFLOP/s, "bfloat16":
    GFLOP/s}`` of a 2048 x 2048 matrix product. A network's seconds mean little across machines without them (the
    same cfm run took 32.5 s on a CPU with AMX bfloat16 units and 76 s on one without; issue 30)."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    return {name: round(matmul_gflops(device, dtype)) for name, dtype in dtypes.items()}


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
