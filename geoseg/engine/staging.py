"""Host staging buffers: where read chunks land before they are copied to the device.

:class:`StagingPool` holds a fixed number of equal buffers, page-locked (pinned) when the device is a
GPU, so copies to it are asynchronous and run at full speed. A reader takes a buffer, decodes into
it, starts the copy and hands the buffer back with the copy's event; the buffer is reused only once
that event has completed. The pool never holds more than ``slots`` buffers, so host memory for reads
is fixed by the thread count and the chunk size, whatever the scene's size.

Why a pool of our own rather than ``torch.empty(pin_memory=True)`` per chunk: PyTorch's caching host
allocator keeps every pinned block a run ever held at once, and page-locking new blocks is slow and
serialised (it ranked first in a profile of the engine; benchmarks/RESULTS.md). Buffers freed at the
end of a run go back to that cache, so the next run of the process gets them without pinning again.
"""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np
import torch


class StagingPool:
    """At most ``slots`` host buffers of ``slot_bytes`` bytes each, recycled (see module docstring)."""

    def __init__(self, slot_bytes: int, slots: int, pin: bool):
        self.slot_bytes, self.slots, self.pin = slot_bytes, max(1, slots), pin
        self._free: deque[tuple[torch.Tensor, torch.cuda.Event | None]] = deque()
        self._made = 0
        self._ready = threading.Condition()

    @property
    def made(self) -> int:
        """Buffers allocated so far (at most ``slots``)."""
        return self._made

    def acquire(self, nbytes: int) -> torch.Tensor:
        """A 1-D uint8 buffer of at least ``nbytes``; waits while every buffer is in use.

        A request larger than a slot gets a buffer of its own, outside the pool.
        """
        if nbytes > self.slot_bytes:
            return torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)
        with self._ready:
            while not self._free and self._made >= self.slots:
                self._ready.wait()
            if self._free:
                buffer, copied = self._free.popleft()
            else:
                self._made += 1
                buffer, copied = None, None
        if buffer is None:
            return torch.empty(self.slot_bytes, dtype=torch.uint8, pin_memory=self.pin)
        if copied is not None:
            copied.synchronize()  # the copy out of it has finished (usually long ago)
        return buffer

    def release(self, buffer: torch.Tensor, copied: torch.cuda.Event | None) -> None:
        """Hand ``buffer`` back; it is reused once ``copied`` (the copy out of it) has completed."""
        if buffer.numel() != self.slot_bytes:
            return  # a one-off buffer: PyTorch frees it once its copy is done
        with self._ready:
            self._free.append((buffer, copied))
            self._ready.notify()


def carve(buffer: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, offset: int = 0) -> torch.Tensor:
    """A ``shape`` tensor of ``dtype`` on the bytes of ``buffer`` from ``offset`` (a multiple of the item size)."""
    nbytes = math.prod(shape) * dtype.itemsize
    return buffer[offset : offset + nbytes].view(dtype).view(shape)


def upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array on ``device`` without waiting for the device: page-locked, copied asynchronously.

    ``torch.tensor(values, device="cuda")`` (or ``.to("cuda")`` from pageable memory) would copy and then wait for
    the device's queue to drain, every queued network batch with it: a gap in the GPU's work, with the device
    thread back only once the reader threads let go of the GIL (benchmarks/RESULTS.md section 14). On the CPU: the
    array's values as a tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
