"""Networks that stay in a process: loaded once, placed once, shared by every task that runs there.

Dask tasks (:func:`geoseg.array.segment_array`'s chunks, a cluster's scenes and row strips) carry a
:class:`ModelRef`, a name and a flag, never the network: pickling a network into every task would
send its weights with each one. Each process (the local one, or each dask worker) loads a model the
first time one of its tasks asks for it and keeps it, with one :class:`~geoseg.engine.predictor.Predictor`
per device and settings, in :data:`RESIDENT`. A predictor runs one batch at a time (its lock): tasks
in the threads of one process read and develop their pixels in parallel and take turns on the device.

A whole scene on a worker (``geoseg serve``, a batch's scene) runs on the process's one device thread
(:meth:`ResidentModels.on_device_thread`), not on whichever of dask's threads took the task: PyTorch keeps
cuDNN's execution plans per thread, so a scene on a thread new to the network planned every convolution
again (about 2 s of an efficientnet-b4 run on the lent H100, benchmarks/RESULTS.md section 14).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

from geoseg.config import RunConfig
from geoseg.engine.device import DeviceSession, resolve_device
from geoseg.engine.predictor import Predictor
from geoseg.errors import ModelError
from geoseg.models.registry import LoadedModel, load_model

T = TypeVar("T")

#: Names of networks held in memory (``segment_array(model=loaded)``) start with this.
MEMORY_PREFIX = "memory:"


@dataclass(frozen=True)
class ModelRef:
    """What a task carries to name its model: a built-in name or model folder, or a network held in
    this process (``memory:N``)."""

    name: str
    trust_checkpoint: bool = False


@dataclass(frozen=True)
class PredictorKey:
    """A predictor's settings, as a task names them."""

    model: ModelRef
    device: str  # resolved: cpu, cuda:0 ...
    precision: str
    batch_size: int | None
    backend: str
    patch: int
    cuda_graphs: bool | None = None
    reproducible: bool = False
    tta: str = "none"


class ResidentModels:
    """The models and predictors of one process (see module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[ModelRef, LoadedModel] = {}
        self._predictors: dict[PredictorKey, tuple[Predictor, threading.Lock]] = {}
        self._numbers = itertools.count()
        self.session = DeviceSession()
        self._device_thread: ThreadPoolExecutor | None = None

    def on_device_thread(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on this process's device thread (one, kept for the process's life), its result or error
        returned here: the thread's cuDNN plans, cuBLAS handles and CUDA graphs' warm state serve every scene."""
        with self._lock:
            if self._device_thread is None:
                self._device_thread = ThreadPoolExecutor(1, thread_name_prefix="geoseg-device")
            thread = self._device_thread
        return thread.submit(fn).result()

    def forget_threads(self) -> None:
        """After a fork: the child has the executor but not its thread."""
        self._lock = threading.Lock()
        self._device_thread = None

    def hold(self, loaded: LoadedModel) -> ModelRef:
        """Keep a network given in memory; tasks of this process name it by the returned reference."""
        with self._lock:
            for ref, held in self._models.items():
                if held is loaded:
                    return ref
            ref = ModelRef(f"{MEMORY_PREFIX}{next(self._numbers)}")
            self._models[ref] = loaded
            return ref

    def model(self, ref: ModelRef) -> LoadedModel:
        """The model ``ref`` names, loaded the first time it is asked for in this process."""
        with self._lock:
            if ref not in self._models:
                if ref.name.startswith(MEMORY_PREFIX):
                    raise ModelError(f"model {ref.name} is a network held in another process's memory; "
                                     f"dask.distributed workers load models by name: save it as a model package "
                                     f"(geoseg.models.package.save_package) and pass its folder")
                self._models[ref] = load_model(ref.name, ref.trust_checkpoint)
            return self._models[ref]

    def predictor_for(self, model: ModelRef, config: RunConfig, patch: int) -> tuple[Predictor, threading.Lock]:
        """The predictor a task of a run with ``config`` uses on this process's device (``config.device``
        resolved here: a worker's ``auto`` / ``cuda`` is its own GPU), and its lock."""
        device = resolve_device(config.device)
        return self.predictor(PredictorKey(model, str(device), config.precision, config.batch_size, config.backend,
                                           patch, config.cuda_graphs, config.reproducible, config.tta))

    def predictor(self, key: PredictorKey) -> tuple[Predictor, threading.Lock]:
        """The predictor for ``key`` and the lock a task holds while it runs a batch through it."""
        loaded = self.model(key.model)
        with self._lock:
            if key not in self._predictors:
                predictor = Predictor(loaded.network, torch.device(key.device), key.precision, key.batch_size,
                                      channels=len(loaded.card.bands), patch=key.patch, cuda_graphs=key.cuda_graphs,
                                      session=self.session, backend=key.backend, reproducible=key.reproducible,
                                      tta=key.tta)
                self._predictors[key] = predictor, threading.Lock()
            return self._predictors[key]


#: This process's resident models.
RESIDENT = ResidentModels()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RESIDENT.forget_threads)
