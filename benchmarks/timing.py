"""Timing and peak-memory measurement that holds on a noisy shared machine: medians of repeated runs with their
spread, peak memory as the rise over the memory held before the call."""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch


@dataclass
class Measurement:
    median_s: float
    min_s: float
    max_s: float
    runs: int
    peak_mb: float | None  # extra memory at the peak of one call (CPU: resident set; CUDA: allocated)

    def as_dict(self) -> dict:
        return asdict(self)

    def cell(self) -> str:
        return f"{self.median_s:.3f} s ({self.min_s:.3f}–{self.max_s:.3f})"


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_cpu_peak() -> bool:
    """Give freed heap memory back to the OS (else a call that reuses it shows no growth), then reset the kernel's
    high-water mark of this process's resident set (Linux ``clear_refs`` 5)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 3, slow_s: float = 5.0) -> Measurement:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up; a warm-up slower than ``slow_s``
    counts as the first run (slow cases would blow the time budget otherwise). Peak memory is taken on the first
    measured call."""
    gc.collect()
    peak = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        has_peak = _reset_cpu_peak()
        base = _rss_kb("VmRSS:")
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    elif has_peak:
        peak = (_rss_kb("VmHWM:") - base) / 1024
    times = [first] if first > slow_s else []
    while len(times) < repeats:
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return Measurement(statistics.median(times), min(times), max(times), len(times), peak)


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Achievable FLOP/s of a plain (n x n) @ (n x n) matmul on this machine, right now."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    m = measure(lambda: a @ b, device, repeats=repeats)
    return 2 * n**3 / m.median_s
