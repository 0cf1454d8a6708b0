"""`bench.lib.measure`: a phase's own peak memory, on the CPU and (where there is one) the GPU.
Nothing here checks a timing."""

from __future__ import annotations

import pytest
import torch

from bench.lib.measure import measure

MIB = 2**20


def _leave_freed_memory_resident() -> torch.Tensor:
    """What an earlier phase leaves behind: a hole of freed memory that glibc keeps resident (freeing a
    large mmapped block raises its mmap threshold, so the 20 MiB blocks after it live on the heap, and
    the pinned block above them, returned to be kept alive, stops the heap's top from being returned)."""
    mmapped = torch.ones(7 * MIB)  # 28 MiB, above the mmap threshold
    del mmapped
    blocks = [torch.ones(5 * MIB) for _ in range(20)]  # 20 x 20 MiB
    pin = torch.ones(MIB // 2)
    del blocks
    return pin


def test_peak_rss_is_the_phases_own_allocation() -> None:
    pin = _leave_freed_memory_resident()  # a phase reusing it would not grow the RSS: it is released first
    with measure() as small:
        torch.ones(MIB // 4)  # 1 MiB
    with measure() as big:
        block = torch.ones(64 * MIB)  # 256 MiB, written, so resident
        del block
    fields = big.as_dict()
    del pin
    assert fields["peak_rss_increase_mb"] >= 200  # the high-water mark was reset: not the process's peak
    assert small.as_dict()["peak_rss_increase_mb"] < 100
    assert fields["seconds"] >= 0 and fields["rss_method"] in ("vmhwm", "sampled", "ru_maxrss")


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.is_initialized(), reason="CUDA already in use")
def test_no_gpu_figure_where_cuda_is_unused() -> None:
    with measure() as m:
        torch.ones(16)
    assert m.peak_gpu_mb is None and "peak_gpu_mb" not in m.as_dict()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_gpu_memory_is_the_phases_own() -> None:
    torch.ones(1, device="cuda")  # CUDA started before the phases
    with measure() as big:
        block = torch.ones(64 * MIB, device="cuda")  # 256 MiB
        del block
    with measure() as small:
        torch.ones(MIB // 4, device="cuda")
    assert big.as_dict()["peak_gpu_mb"] >= 256
    assert small.peak_gpu_mb < 64  # the peak was reset after the big phase
