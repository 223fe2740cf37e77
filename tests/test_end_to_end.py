"""The real Sentinel-2 scene through the real CLI and the built-in pretrained model, on the CPU.

Checks the mask's georeferencing and classes, that tiling leaves no seams (agreement with one
whole-scene forward pass), and that it agrees with ukis-csmask's own ONNX pipeline (the peer).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.engine.resample import coarsen
from geoseg.models import load_model
from tests.helpers import S2_SCENE

pytestmark = pytest.mark.skipif(not S2_SCENE.exists(), reason=f"real data not found at {S2_SCENE}")
FACTOR = 3  # 10 m scene, 30 m model


def test_sentinel2_cloud_mask_end_to_end(tmp_path) -> None:
    scene = tmp_path / S2_SCENE.name
    shutil.copy(S2_SCENE, scene)
    before = scene.read_bytes()
    result = CliRunner().invoke(app, ["run", str(scene), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert scene.read_bytes() == before  # the input is never touched

    with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + ".mask.tif")) as out:
        assert (out.crs, out.transform, out.width, out.height) == (src.crs, src.transform, src.width, src.height)
        mask = out.read(1)
        reflectance = src.read().astype(np.float32) * 1e-4
    assert set(np.unique(mask)) <= {0, 1, 2, 255}
    item = json.loads(scene.with_name(scene.stem + ".mask.json").read_text())
    assert item["properties"]["datetime"] == "2017-02-16T00:00:00Z"  # the acquisition, from the product name

    # The same pixels the model sees: 3x3 means of the 10 m scene (a 30 m grid).
    everywhere = torch.ones(reflectance.shape[1:], dtype=torch.bool)
    pixels = coarsen(torch.from_numpy(reflectance), everywhere, FACTOR)[0].numpy()

    # (a) seams: one forward pass over the whole 30 m scene (reflect-padded at the edges as the
    # tiling is), upsampled to 10 m the same way.
    model = load_model("csmask-6b-l1c")
    card = model.card
    x = (pixels - np.array(card.mean, np.float32)[:, None, None]) / np.array(card.std, np.float32)[:, None, None]
    pad = card.overlap
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    with torch.inference_mode():
        prob = torch.softmax(model.network(torch.from_numpy(padded)[None]), dim=1)[:, :, pad:-pad, pad:-pad]
        whole = F.interpolate(prob, scale_factor=FACTOR, mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    seam_free = (whole == mask).mean()
    assert seam_free >= 0.99, seam_free

    # (b) the peer: ukis-csmask's own pipeline (ONNX Runtime, its own 256 px tiling) on the same pixels.
    csmask = pytest.importorskip("ukis_csmask.mask")
    peer = csmask.CSmask(np.moveaxis(pixels, 0, -1).copy(), list(card.bands), product_level="l1c",
                         providers=["CPUExecutionProvider"]).csm[..., 0]
    peer_10m = peer.repeat(FACTOR, axis=0).repeat(FACTOR, axis=1)
    agreement = (peer_10m == mask).mean()
    assert agreement >= 0.95, agreement
    print(f"\nS2 end-to-end: whole-scene agreement {seam_free:.4f}, ukis-csmask agreement {agreement:.4f}, "
          f"classes {np.bincount(mask.ravel(), minlength=3)[:3] / mask.size}")
