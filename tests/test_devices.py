"""devices.py: threads and noticing contention for the CPU (resolving --device is tested through the CLI)."""

import pytest
import torch

from charrnn import devices
from charrnn.errors import CharRNNError


def test_contention_is_told_once_after_two_slow_windows_in_a_row():
    watch = devices.Contention()
    heard = [watch.slowed(speed) for speed in [10, 400, 500, 480, 110, 130, 90, 480, 100, 90, 80, 50]]
    # 110 and 130 are above a quarter of 500; 90 alone is one slow window; 100, 90 are two in a row: told once
    assert heard == [False] * 9 + [True, False, False]
    assert watch.best == 500


def test_a_slow_start_is_not_contention():
    watch = devices.Contention()
    assert not any(watch.slowed(speed) for speed in [1, 2, 50, 400, 420, 390, 410])


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert devices.set_threads(None) == before
        assert devices.set_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    with pytest.raises(CharRNNError, match="--threads must be at least 1, not 0"):
        devices.set_threads(0)
