"""extraction.heap.retained_heap: freed tensor memory is reused without page faults, and the
process's allocator settings and memory are handed back on exit (glibc only; skipped elsewhere)."""

from __future__ import annotations

import resource

import pytest
import torch

from neurflow_graph.extraction import heap

pytestmark = pytest.mark.skipif(heap._libc() is None, reason="glibc malloc tuning only applies on glibc")

MIB = 1 << 20
SIZE = 128 * MIB
PAGES = SIZE // 4096


def _faults_of_forward_like_cycles(cycles: int) -> int:
    """Minor page faults of ``cycles`` forward-like cycles: tensors of 128, 64 and 96 MiB allocated,
    filled and freed in an overlapping order, as a layer-by-layer forward pass does."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        x = torch.ones(SIZE // 4)
        y = torch.ones(SIZE // 8)
        del x
        z = torch.ones(3 * SIZE // 16)
        del y, z
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_freed_blocks_are_reused_without_page_faults_inside_and_refaulted_outside():
    outside = _faults_of_forward_like_cycles(4)
    assert outside > 4 * PAGES, f"outside the context freed big blocks are unmapped and re-faulted: {outside} faults"
    with heap.retained_heap() as active:
        assert active is True
        _faults_of_forward_like_cycles(3)  # the heap grows to the cycle's working set once
        inside = _faults_of_forward_like_cycles(4)
    assert inside < outside / 4, f"{inside} page faults inside vs {outside} outside for the same cycles"
    after = _faults_of_forward_like_cycles(4)
    assert after > 4 * PAGES, "after the context, big blocks are unmapped again"


def test_memory_is_returned_on_exit_and_nesting_keeps_the_setting():
    base = _rss()
    with heap.retained_heap():
        with heap.retained_heap():
            x = torch.ones(SIZE // 4)
            del x
        inner_exit = _rss()
        assert inner_exit - base > SIZE // 2, "the inner exit must not trim while the outer context holds the heap"
        y = torch.ones(SIZE // 4)  # reuses the retained block
        del y
    assert _rss() - base < SIZE // 4, "on exit malloc_trim returns the retained memory to the system"


def test_extraction_result_does_not_depend_on_the_heap_setting():
    from neurflow_graph.extraction.activations import scan_activations

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    x = torch.randn(20, 3, 32, 32)

    def scan():
        phi, _ = scan_activations(module=net, layers=["2", "0"], n_patches=20, batches=lambda ids: x[ids],
                                  device=torch.device("cpu"), batch_size=7)
        return phi

    plain = scan()
    with heap.retained_heap():
        kept = scan()
    for layer in plain:
        assert (plain[layer] == kept[layer]).all()


def _faults_of_medium_cycles(cycles: int = 200, mib: int = 4) -> int:
    """Minor page faults of ``cycles`` allocate-touch-free cycles of ``mib`` MiB tensors (below
    glibc's adaptive mmap ceiling of 32 MiB: an untouched process reuses them from the heap)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        x = torch.ones(mib * MIB // 4)
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_after_the_context_medium_blocks_are_reused_as_in_an_untouched_process():
    """mallopt ends glibc's adaptive mmap threshold for good; with the threshold left at its
    128 KiB start every 4 MiB block was mmapped and re-faulted afterwards (~1,000 faults a cycle)."""
    with heap.retained_heap():
        pass
    faults = _faults_of_medium_cycles()
    assert faults < 200 * (4 * MIB // 4096) / 10, f"{faults} faults for 200 cycles of 4 MiB after the context"


def test_an_error_inside_hands_the_settings_back():
    with pytest.raises(KeyboardInterrupt):
        with heap.retained_heap():
            raise KeyboardInterrupt
    assert heap._depth == 0
    assert _faults_of_forward_like_cycles(4) > 4 * PAGES, "big blocks are unmapped again after an error"
    assert _faults_of_medium_cycles() < 200 * (4 * MIB // 4096) / 10


@pytest.mark.parametrize("env", [{"NEURFLOW_RETAIN_HEAP": "0"}, {"MALLOC_ARENA_MAX": "2"}])
def test_an_opt_out_or_the_users_own_malloc_tuning_leaves_malloc_alone(monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with heap.retained_heap() as active:
        assert active is False
        inside = _faults_of_forward_like_cycles(4)
    assert inside > 4 * PAGES, "with the setting off, big blocks are still unmapped and re-faulted"
