"""Wall time and peak resident memory of one phase of a benchmark, and a description of the machine.

Peak memory is the process's resident set size (RSS): ``tracemalloc`` sees Python allocations only,
not torch's. On Linux the kernel's high-water mark (``VmHWM``) is reset before each phase by writing
5 to ``/proc/self/clear_refs``, so the peak is the phase's own. Elsewhere a thread samples the RSS with
psutil every 10 ms (a peak shorter than that can be missed); without psutil the figure is the
process's lifetime peak (``ru_maxrss``), which an earlier, larger phase hides.

Before each phase, memory that earlier phases freed but glibc's allocator kept resident (holes in its
heap, which it only returns at the top) is handed back with ``malloc_trim``: otherwise a phase reusing
those pages would not grow the RSS at all, and the phase's peak would include an earlier one's garbage.

Where the process has used CUDA, the phase's time includes its queued GPU work (the device is
synchronised at both ends: kernels run asynchronously, so the wall clock alone would stop early) and
``peak_gpu_mb`` is the most GPU memory torch allocated during it.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import functools
import gc
import importlib.util
import os
import platform
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_SAMPLE_S = 0.01


@dataclass
class Measurement:
    """Time and memory of one phase.

    Attributes:
        seconds: Wall time.
        peak_rss_mb: Highest resident set size of the process during the phase (MiB).
        start_rss_mb: Resident set size when the phase began (MiB): what the process already held.
        rss_method: ``vmhwm`` (kernel high-water mark, reset per phase), ``sampled`` (psutil thread)
            or ``ru_maxrss`` (the process's lifetime peak).
        peak_gpu_mb: Most GPU memory allocated by torch during the phase (MiB, the current device);
            None where the process has not used CUDA.
        heap_released: Whether freed heap memory was returned to the kernel before the phase (glibc);
            where not, the peak can include an earlier phase's freed memory and the growth hide in it.
    """

    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    start_rss_mb: float = 0.0
    rss_method: str = ""
    peak_gpu_mb: float | None = None
    heap_released: bool = False

    def as_dict(self) -> dict[str, float | str | bool]:
        """The figures as row fields, with the phase's own growth (peak minus start); the GPU peak only
        where there is one."""
        fields: dict[str, float | str | bool] = {
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "start_rss_mb": self.start_rss_mb,
            "peak_rss_increase_mb": max(0.0, self.peak_rss_mb - self.start_rss_mb),
            "rss_method": self.rss_method,
            "heap_released": self.heap_released,
        }
        if self.peak_gpu_mb is not None:
            fields["peak_gpu_mb"] = self.peak_gpu_mb
        return fields


def _cuda():
    """torch.cuda when this process has started CUDA, else None: measuring never imports torch or
    creates a CUDA context of its own."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def _status_mb(field: str) -> float | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def _lifetime_peak_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def current_rss_mb() -> float:
    """The process's resident set size now (MiB); the lifetime peak where neither /proc nor psutil is there."""
    rss = _status_mb("VmRSS")
    if rss is not None:
        return rss
    try:
        import psutil
    except ImportError:
        return _lifetime_peak_mb()
    return psutil.Process().memory_info().rss / 2**20


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim`` from the symbols already loaded in the process (looked up once), or None:
    musl and macOS have none."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


def _release_free_heap() -> bool:
    """Returns freed heap memory to the kernel; False where there is no ``malloc_trim``."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


class _Sampler(threading.Thread):
    """Samples the RSS until stopped; keeps the highest value."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = current_rss_mb()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(_SAMPLE_S):
            self.peak = max(self.peak, current_rss_mb())

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, current_rss_mb())


@contextlib.contextmanager
def measure() -> Iterator[Measurement]:
    """Measures the block's wall time and peak RSS; the figures are filled in when the block exits.

    Not reentrant: a measurement inside another resets the outer one's memory peak.

    Example:
        >>> with measure() as m:
        ...     run_phase()
        >>> m.seconds, m.peak_rss_mb
    """
    gc.collect()  # garbage of an earlier phase is not this phase's memory,
    released = _release_free_heap()  # nor is what it freed but the allocator kept resident
    cuda = _cuda()
    if cuda is not None:
        cuda.synchronize()  # an earlier phase's queued kernels are not this phase's time
        cuda.reset_peak_memory_stats()
    result = Measurement(start_rss_mb=current_rss_mb(), heap_released=released)
    sampler = None
    if _reset_high_water_mark():
        result.rss_method = "vmhwm"
    elif importlib.util.find_spec("psutil") is not None:
        sampler = _Sampler()
        sampler.start()
        result.rss_method = "sampled"
    else:
        result.rss_method = "ru_maxrss"
    started = time.perf_counter()
    try:
        yield result
    finally:
        if cuda is not None:
            cuda.synchronize()
            result.peak_gpu_mb = cuda.max_memory_allocated() / 2**20
        result.seconds = time.perf_counter() - started
        if sampler is not None:
            result.peak_rss_mb = sampler.stop()
        elif result.rss_method == "vmhwm":
            result.peak_rss_mb = _status_mb("VmHWM") or current_rss_mb()
        else:
            result.peak_rss_mb = _lifetime_peak_mb()


def _cpu_model() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def _memory_gib() -> float | None:
    try:
        match = re.search(r"^MemTotal:\s+(\d+)\s+kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        return None
    return round(int(match.group(1)) / 2**20, 1) if match else None


def machine_info(repo: str | Path | None = None) -> dict[str, object]:
    """What the numbers were measured on: CPU, cores, memory, GPU, library versions, date, git commit."""
    import torch
    import transformers

    from unierase.data.provenance import git_commit

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": git_commit(Path(repo)) if repo else None,
        "command": _command(),
    }


def _command() -> str:
    """The command line of this run, as typed for a ``python -m`` module (``bench/cost.py`` -> ``bench.cost``)."""
    script = Path(sys.argv[0])
    name = ".".join(script.with_suffix("").parts[-2:]) if script.suffix == ".py" else script.name
    return " ".join(["python -m", name, *(shlex.quote(a) for a in sys.argv[1:])])
