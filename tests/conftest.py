"""Fixtures: small real GeoTIFFs written with rasterio, and a tiny deterministic stand-in model
(the helpers behind them are in tests/helpers.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from geoseg.models import LoadedModel
from tests.helpers import TinyNet, tiny_card, write_tif


@pytest.fixture
def make_tif(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10_000))

    def make(data: np.ndarray, name: str | None = None, **kw: object) -> Path:
        return write_tif(tmp_path / (name or f"scene{next(counter)}.tif"), data, **kw)

    return make


@pytest.fixture
def tiny_model() -> Callable[..., LoadedModel]:
    def make(**kw: object) -> LoadedModel:
        card = tiny_card(**kw)  # type: ignore[arg-type]
        return LoadedModel(card=card, network=TinyNet(card.in_channels).eval())

    return make


@pytest.fixture(autouse=True, scope="session")
def _no_users_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A geoseg service the user runs (geoseg serve) is never used by the tests, unless a test starts its own."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.getbasetemp() / "xdg-state")
    yield
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets a cache of its own, never the user's, removed after it: the exports of its random-weight
    models (ONNX, OpenVINO, traced: 60 to 130 MB each) are never used again, and kept for a whole run they
    came to 6.6 GB. The built-in weights, converted once, are shared by the session (the cache's models/)."""
    shared = tmp_path_factory.getbasetemp() / "geoseg-cache-models"
    shared.mkdir(exist_ok=True)
    own = tmp_path_factory.mktemp("geoseg-cache")
    (own / "models").symlink_to(shared, target_is_directory=True)
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(own))
    yield
    shutil.rmtree(own, ignore_errors=True)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A model folder (card + safetensors) holding a small random-weight smp U-Net for 3 bands b1..b3."""
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    folder = tmp_path / "unet-r18"
    folder.mkdir()
    tiny_card().save(folder / "config.json")
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3)
    save_file(net.state_dict(), str(folder / "model.safetensors"))
    return folder
