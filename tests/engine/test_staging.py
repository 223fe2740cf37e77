"""The staging pool: host memory for reads is fixed by the number of slots, whatever the reads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from geoseg.engine.staging import StagingPool, carve


def test_pool_never_holds_more_than_its_slots_and_reuses_them() -> None:
    pool = StagingPool(slot_bytes=1024, slots=3, pin=False)
    held, most, lock = set(), 0, threading.Lock()
    first_three = threading.Barrier(3)  # three buffers held at once, however the threads are scheduled

    def work(i: int) -> None:
        nonlocal most
        buffer = pool.acquire(100 + i)
        with lock:
            held.add(buffer.data_ptr())
            most = max(most, len(held))
        if i < 3:
            first_three.wait(timeout=30)
        buffer[:4] = i  # used while held: no one else has it
        assert (buffer[:4] == i % 256).all()
        with lock:
            held.discard(buffer.data_ptr())
        pool.release(buffer, None)

    with ThreadPoolExecutor(8) as threads:
        list(threads.map(work, range(200)))
    assert pool.made == 3
    assert most <= 3


def test_acquire_waits_for_a_release() -> None:
    pool = StagingPool(slot_bytes=64, slots=1, pin=False)
    first = pool.acquire(64)
    got = threading.Event()

    def second() -> None:
        pool.acquire(10)
        got.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not got.wait(0.2)  # the only slot is taken
    pool.release(first, None)
    assert got.wait(5)
    thread.join()


def test_oversized_request_gets_its_own_buffer_outside_the_pool() -> None:
    pool = StagingPool(slot_bytes=64, slots=1, pin=False)
    big = pool.acquire(1000)
    assert big.numel() >= 1000 and pool.made == 0
    pool.release(big, None)
    assert pool.acquire(64).data_ptr() != big.data_ptr()  # not kept: the pool's slot is made instead
    assert pool.made == 1


def test_carve_views_the_buffer_bytes() -> None:
    buffer = torch.zeros(64, dtype=torch.uint8)
    values = carve(buffer, (2, 3, 4), torch.int16)
    mask = carve(buffer, (3, 4), torch.bool, offset=48)
    values.numpy().view(np.uint16)[...] = 40000
    mask.numpy()[...] = True
    assert values.shape == (2, 3, 4) and mask.shape == (3, 4)
    assert (buffer[:48].numpy().view(np.uint16) == 40000).all() and buffer[48:60].all() and not buffer[60:].any()
