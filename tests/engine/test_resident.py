"""The resident models' device thread: a worker's scenes all run on one thread, whatever thread took the task."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from geoseg.engine.resident import ResidentModels


def test_scenes_from_many_threads_run_on_one_device_thread() -> None:
    """PyTorch keeps cuDNN's plans per thread: every scene of a worker must reach the device from the same one."""
    resident = ResidentModels()
    with ThreadPoolExecutor(4) as callers:  # as dask's worker threads would take the tasks
        seen = list(callers.map(lambda _: resident.on_device_thread(lambda: threading.get_ident()), range(12)))
        callers_seen = set(callers.map(lambda _: threading.get_ident(), range(12)))
    assert len(set(seen)) == 1 and seen[0] not in callers_seen | {threading.get_ident()}
    assert resident.on_device_thread(lambda: threading.current_thread().name).startswith("geoseg-device")


def test_the_device_thread_hands_back_errors_and_goes_on() -> None:
    resident = ResidentModels()
    with pytest.raises(ValueError, match="bad scene"):
        resident.on_device_thread(lambda: (_ for _ in ()).throw(ValueError("bad scene")))
    assert resident.on_device_thread(lambda: 7) == 7
