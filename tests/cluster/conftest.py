"""A CPU LocalCluster of 2 worker processes, shared by the cluster tests (starting one takes seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import module_package


def _two_workers():
    pytest.importorskip("distributed")
    from geoseg.cluster.workers import ClusterSpec, connect

    with connect(ClusterSpec(workers=2, threads=1)) as client:
        client.wait_for_workers(2)
        yield client


@pytest.fixture(scope="module")
def client():
    yield from _two_workers()


@pytest.fixture
def own_client():
    """A cluster for one test that kills one of its workers: dask's nanny restarts a killed worker, but once in
    about six runs it did not, and the shared cluster's later tests then waited for a second worker for ever."""
    yield from _two_workers()


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Iterator[Path]:
    """A real smp U-Net as a model package: workers load it by its folder."""
    with module_package(tmp_path_factory, "model", "unet") as package:
        yield package
