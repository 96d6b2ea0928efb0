"""The benchmark's host-speed probe: a figure to compare runs by, that leaves torch as found."""

from __future__ import annotations

import torch

from stream_mmsa.bench.common import host_speed_ms


def test_host_probe_measures_and_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    ms = host_speed_ms(repeats=3)
    assert ms > 0
    assert torch.get_num_threads() == before
