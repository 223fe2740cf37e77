"""Inputs as users get them (geoseg.io.stack): one file per band, or a STAC Item of per-band assets, give the
mask of the same scene as one stacked file, pixel for pixel, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.io.items import item_stack
from geoseg.io.products import files_stack
from tests.helpers import RESET, SLOW, RangeServer, smooth_image, write_tif

runner = CliRunner()
S2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sentinel2-t33uuu"
S2_SCENE = S2 / "S2A_T33UUU_20170216_L1C_B02-B03-B04-B08-B11-B12_10m.tif"
BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
COMMON = ("blue", "green", "red", "nir", "swir16", "swir22")


def _scene(tmp_path: Path) -> Path:
    """The real Sentinel-2 scene where it is, else a synthetic 6-band one named like it (both hold the 20 m bands
    nearest-upsampled to 10 m)."""
    if S2_SCENE.exists():
        return S2_SCENE
    data = smooth_image((6, 256, 320), seed=11, dtype="uint16")
    data[4:] = data[4:, ::2, ::2].repeat(2, axis=1).repeat(2, axis=2)  # 20 m bands, upsampled as the real file's
    return write_tif(tmp_path / "S2A_T33UUU_20170216_stack.tif", data, descriptions=COMMON)


def _split(scene: Path, folder: Path, coarse: tuple[str, ...] = ()) -> list[Path]:
    """One COG-like tiled file per band; the ``coarse`` bands at 20 m, as Sentinel-2 delivers B11 and B12
    (every other pixel: the 10 m stack holds them nearest-upsampled, so nearest brings them back exactly)."""
    folder.mkdir(exist_ok=True)
    paths = []
    with rasterio.open(scene) as src:
        for i, band in enumerate(BANDS):
            data, transform, profile = src.read(i + 1), src.transform, dict(src.profile)
            if band in coarse:
                data = data[::2, ::2]
                transform = transform * transform.scale(2)
            profile.update(count=1, width=data.shape[1], height=data.shape[0], transform=transform, tiled=True,
                           blockxsize=128, blockysize=128, compress="deflate")
            path = folder / f"T33UUU_20170216T101021_{band}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data, 1)
            paths.append(path)
    return paths


def _labels(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _run(*args: str) -> None:
    result = runner.invoke(app, ["run", *args, "--quiet", "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output


def test_one_file_per_band_gives_the_stacked_files_mask(tmp_path) -> None:
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands")
    _run(str(scene), "-o", str(tmp_path / "stacked.tif"))
    _run(*map(str, files), "-o", str(tmp_path / "per-band.tif"))
    assert np.array_equal(_labels(tmp_path / "stacked.tif"), _labels(tmp_path / "per-band.tif"))
    with rasterio.open(tmp_path / "per-band.bands.vrt") as vrt:  # the stack: a VRT, no pixel copied
        assert vrt.descriptions == BANDS and vrt.count == 6
    assert files_stack(files).name == "T33UUU_20170216T101021"


def _item(tmp_path: Path, files: list[Path], scale: float | None, offset: float | None) -> Path:
    import pystac

    with rasterio.open(files[0]) as ds:
        bounds = ds.bounds
    item = pystac.Item(id="S2A_T33UUU_20170216", geometry=None, bbox=None,
                       datetime=__import__("datetime").datetime(2017, 2, 16, 10, 10, 21),
                       properties={"platform": "sentinel-2a"})
    for band, common, path in zip(BANDS, COMMON, files, strict=True):
        extra = {"eo:bands": [{"name": band, "common_name": common}]}
        if scale is not None:
            extra["raster:bands"] = [{"scale": scale, "offset": offset, "nodata": 0}]
        item.add_asset(band, pystac.Asset(href=f"./bands/{path.name}", media_type=pystac.MediaType.COG,
                                          roles=["data"], extra_fields=extra))
    item.add_asset("thumbnail", pystac.Asset(href="./thumb.png", media_type=pystac.MediaType.PNG,
                                             roles=["thumbnail"]))
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False)))
    del bounds
    return path


def test_a_stac_item_gives_the_stacked_files_mask_and_its_product_remembers_the_item(tmp_path) -> None:
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands", coarse=("B11", "B12"))
    item = _item(tmp_path, files, scale=0.0001, offset=0.0)  # the L1C DN / 10000 the built-in card has too
    _run(str(scene), "-o", str(tmp_path / "stacked.tif"))
    _run(str(item))
    mask = tmp_path / "S2A_T33UUU_20170216.mask.tif"  # named after the Item's id, beside it
    assert np.array_equal(_labels(tmp_path / "stacked.tif"), _labels(mask))
    stac = json.loads(mask.with_suffix(".json").read_text())
    assert stac["properties"]["datetime"].startswith("2017-02-16T10:10:21")
    assert stac["properties"]["platform"] == "sentinel-2a"
    assert {"rel": "derived_from", "href": str(item.resolve()), "type": "application/geo+json",
            "title": "source STAC Item"} in stac["links"]
    stack = item_stack(item)
    assert [s.name for s in stack.sources] == list(COMMON)  # the thumbnail is no band


def test_an_items_scale_and_offset_win_over_the_cards(tmp_path) -> None:
    """Sentinel-2 L2A from baseline 04.00: DN = 10000 x reflectance + 1000, raster:bands scale 0.0001, offset
    -0.1. The Item's scaling makes its mask the one of the stack without the offset, to float32 rounding
    ((DN + 1000) x 0.0001 - 0.1 and DN x 0.0001 differ in the last bit for a third of the values)."""
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands")
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for path in files:
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read(1)
        with rasterio.open(shifted / path.name, "w", **profile) as dst:
            dst.write(data + 1000, 1)
    item = _item(tmp_path, files, 0.0001, -0.1)
    item.write_text(item.read_text().replace("./bands/", "./shifted/"))
    _run(str(scene), "-o", str(tmp_path / "stacked.tif"))
    _run(str(item), "-o", str(tmp_path / "from-item.tif"))
    same = (_labels(tmp_path / "stacked.tif") == _labels(tmp_path / "from-item.tif")).mean()
    assert same > 0.999, same  # without the offset 6 % of the real scene changes class (measured: 0.936)


@pytest.mark.parametrize(("names", "message"), [(["a.tif", "b.tif"], "no band name at the end of the file name")])
def test_files_without_band_names_get_one_line(tmp_path, names, message) -> None:
    paths = [write_tif(tmp_path / n, smooth_image((1, 64, 64), seed=1, dtype="uint16")) for n in names]
    result = runner.invoke(app, ["run", *map(str, paths)])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _remote_item(tmp_path: Path, server: RangeServer, files: list[Path]) -> Path:
    item = _item(tmp_path, files, scale=None, offset=None)
    data = json.loads(item.read_text())
    for band, path in zip(BANDS, files, strict=True):
        data["assets"][band]["href"] = server.url(path.name)
    item.write_text(json.dumps(data))
    return item


def test_a_remote_item_is_read_over_http_with_a_503_retried(tmp_path) -> None:
    """Per-band COGs served over HTTP (Range requests): a 503 on one band's first request is retried; the mask
    equals the local stacked file's; the bytes fetched stay near the files' sizes (COG reads, not copies)."""
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands")
    with RangeServer(tmp_path / "bands", faults={files[2].name: [503]}) as server:
        item = _remote_item(tmp_path, server, files)
        _run(str(scene), "-o", str(tmp_path / "stacked.tif"))
        _run(str(item), "-o", str(tmp_path / "remote.tif"))
        fetched, misses = server.sent, server.misses
    assert np.array_equal(_labels(tmp_path / "stacked.tif"), _labels(tmp_path / "remote.tif"))
    assert misses == 0  # no directory listing, no probe for side-car files (.aux.xml, .ovr, .msk)
    size = sum(p.stat().st_size for p in files)
    # 1.54x here: every reader thread's open reads the header chunk, and GDAL reads 16 KB chunks around these small
    # files' 5 KB tiles; the issue's 1.05x target on a 16384² scene is not measured yet (docs/performance.md).
    assert fetched <= 2 * size, (fetched, size)


def test_a_missing_remote_asset_fails_in_one_line_naming_its_url(tmp_path) -> None:
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands")
    with RangeServer(tmp_path / "bands") as server:
        item = _remote_item(tmp_path, server, files)
        files[3].unlink()
        result = runner.invoke(app, ["run", str(item), "-o", str(tmp_path / "remote.tif")])
    assert result.exit_code == 3, result.output
    assert server.url(files[3].name) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "remote.tif").exists()


def _fault_once_then_always(tmp_path: Path, band: int, fault: int) -> tuple[object, str, float]:
    """Band ``band`` served with ``fault`` on its first request: the mask equals the local stacked file's. Then
    with ``fault`` on every request: the failed run's result, the band's URL and the run's seconds."""
    import time

    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands")
    _run(str(scene), "-o", str(tmp_path / "stacked.tif"))
    with RangeServer(tmp_path / "bands", faults={files[band].name: [fault]}) as server:
        item = _remote_item(tmp_path, server, files)
        _run(str(item), "-o", str(tmp_path / "once.tif"))
    assert np.array_equal(_labels(tmp_path / "stacked.tif"), _labels(tmp_path / "once.tif"))
    with RangeServer(tmp_path / "bands", faults={files[band].name: [fault] * 1000}) as server:
        item = _remote_item(tmp_path, server, files)
        started = time.monotonic()
        result = runner.invoke(app, ["run", str(item), "-o", str(tmp_path / "always.tif")])
        seconds = time.monotonic() - started
        url = server.url(files[band].name)
    assert not (tmp_path / "always.tif").exists()
    return result, url, seconds


def test_a_connection_dropped_mid_file_is_retried_and_then_named(tmp_path) -> None:
    """A band whose first transfer is cut off half-way: read again, the same mask; one cut off every time: the
    run stops in one line naming that band's URL, and no mask is left."""
    result, url, _ = _fault_once_then_always(tmp_path, 2, RESET)
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"geoseg: error: {url}: cannot be read")


def test_a_server_slower_than_the_timeout_is_retried_then_fails(tmp_path, monkeypatch) -> None:
    """GDAL_HTTP_TIMEOUT (geoseg's default 60 s) bounds each request: one late answer is retried, a server late
    every time fails the run in one line, well before its answers would come."""
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "2")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    result, _, seconds = _fault_once_then_always(tmp_path, 1, SLOW)
    assert result.exit_code == 3 and result.stderr.count("\n") == 1, result.output
    assert seconds < 25


def test_a_batch_of_items_resumes(tmp_path) -> None:
    """Items given to `geoseg batch`: each through its stack beside its mask; a rerun skips them, since the stack
    is rewritten only when the Item changes."""
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands")
    item = _item(tmp_path, files, scale=None, offset=None)
    second = tmp_path / "second.json"
    second.write_text(item.read_text().replace('"S2A_T33UUU_20170216"', '"second"'))
    out = tmp_path / "out"
    args = ["batch", str(item), str(second), "-o", str(out), "--device", "cpu", "--quiet", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["counts"]["done"] == 2
    assert (out / "item.mask.tif").is_file() and (out / "item.bands.vrt").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["counts"]["skipped"] == 2


def test_a_batch_of_an_item_collection(tmp_path) -> None:
    """A search result (a FeatureCollection of Items, relative hrefs): each Item a scene, its mask named by its id,
    a rerun skipping them."""
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands")
    first = json.loads(_item(tmp_path, files, scale=None, offset=None).read_text())
    second = {**json.loads(json.dumps(first)), "id": "second"}
    collection = tmp_path / "search.geojson"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": [first, second]}))
    out = tmp_path / "out"
    args = ["batch", str(collection), "-o", str(out), "--device", "cpu", "--quiet", "--json"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["counts"]["done"] == 2
    assert (out / "S2A_T33UUU_20170216.mask.tif").is_file() and (out / "second.mask.tif").is_file()
    assert np.array_equal(_labels(out / "S2A_T33UUU_20170216.mask.tif"), _labels(out / "second.mask.tif"))
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["counts"]["skipped"] == 2


@pytest.mark.skipif(not (S2 / "IMG_DATA").is_dir(), reason="needs ../shared/data/sentinel2-t33uuu/IMG_DATA")
def test_a_sentinel2_safe_folder_and_zip_run_as_their_band_files(tmp_path) -> None:
    """The real L1C JP2s in a SAFE's layout: the folder gives the file list's mask; its .zip is read in place and
    its metadata's RADIO_ADD_OFFSET (baseline 04.00 on) becomes the stack's offset."""
    import shutil
    import zipfile

    safe = tmp_path / "S2A_MSIL1C_20170216T102101_N0204_R065_T33UUU_20170216T102204.SAFE"
    img = safe / "GRANULE" / "L1C_T33UUU_A008642_20170216T102204" / "IMG_DATA"
    img.mkdir(parents=True)
    for jp2 in sorted((S2 / "IMG_DATA").glob("*.jp2")):
        shutil.copy(jp2, img / jp2.name)
    _run(*map(str, sorted(img.glob("*.jp2"))), "-o", str(tmp_path / "files.tif"))
    _run(str(safe), "-o", str(tmp_path / "safe.tif"))
    assert np.array_equal(_labels(tmp_path / "files.tif"), _labels(tmp_path / "safe.tif"))
    (safe / "MTD_MSIL1C.xml").write_text('<x><RADIO_ADD_OFFSET band_id="0">-1000</RADIO_ADD_OFFSET></x>')
    archive = tmp_path / f"{safe.name.removesuffix('.SAFE')}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(safe.rglob("*")):
            zf.write(path, path.relative_to(tmp_path))
    shutil.rmtree(safe)
    _run(str(archive))  # the mask beside the zip, named after it
    mask = tmp_path / f"{archive.stem}.mask.tif"
    assert mask.is_file()
    with rasterio.open(tmp_path / f"{archive.stem}.bands.vrt") as vrt:
        assert vrt.count == 13 and vrt.descriptions[1] == "B02" and vrt.tags()["GEOSEG_OFFSET"] == "-0.1"


def test_a_landsat_collection2_folder_names_its_bands_and_scales_them(tmp_path) -> None:
    scene = _scene(tmp_path)
    product = tmp_path / "LC08_L2SP_190024_20200418_20200822_02_T1"
    product.mkdir()
    with rasterio.open(scene) as src:
        profile = {**src.profile, "count": 1}
        bands = [src.read(1), *[src.read(i) for i in range(1, 7)]]  # SR_B1 (coastal) stands in as a copy of blue
    for number, data in enumerate(bands, start=1):
        with rasterio.open(product / f"{product.name}_SR_B{number}.TIF", "w", **profile) as dst:
            dst.write(data, 1)
    (product / f"{product.name}_MTL.txt").write_text("GROUP = LANDSAT_METADATA_FILE\nEND\n")
    _run(str(product))
    with rasterio.open(tmp_path / f"{product.name}.bands.vrt") as vrt:
        assert vrt.descriptions == ("coastal", "blue", "green", "red", "nir", "swir16", "swir22")
        assert float(vrt.tags()["GEOSEG_SCALE"]) == 2.75e-05 and float(vrt.tags()["GEOSEG_OFFSET"]) == -0.2
    item = json.loads((tmp_path / f"{product.name}.mask.json").read_text())
    assert item["properties"]["platform"] == "landsat-8"


def test_a_folder_without_band_files_is_one_line(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    result = runner.invoke(app, ["run", str(tmp_path / "empty")])
    assert result.exit_code == 3 and result.stderr.count("\n") == 1 and "no band files" in result.stderr
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    broken = runner.invoke(app, ["run", str(tmp_path / "broken.zip")])
    assert broken.exit_code == 3 and broken.stderr.count("\n") == 1 and "not a readable .zip" in broken.stderr


def test_a_batch_of_a_static_catalog_walks_its_children_to_the_items(tmp_path) -> None:
    """A static catalog (catalog -> collection -> Items, relative links, a link back up that is not followed as a
    child): every Item a scene, named by its file, and a remote link refused in one line."""
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands")
    template = json.loads(_item(tmp_path, files, scale=None, offset=None).read_text())
    root = tmp_path / "catalog"
    for name in ("a", "b"):
        item = {**json.loads(json.dumps(template)), "id": name}
        for asset in item["assets"].values():
            asset["href"] = str((tmp_path / asset["href"]).resolve())
        (root / "s2" / name).mkdir(parents=True)
        (root / "s2" / name / f"{name}.json").write_text(json.dumps(item))
    (root / "s2" / "collection.json").write_text(json.dumps({
        "type": "Collection", "id": "s2", "stac_version": "1.1.0", "description": "", "license": "other",
        "extent": {}, "links": [{"rel": "item", "href": "./a/a.json"}, {"rel": "item", "href": "./b/b.json"},
                                {"rel": "parent", "href": "../catalog.json"}]}))
    (root / "catalog.json").write_text(json.dumps({
        "type": "Catalog", "id": "root", "stac_version": "1.1.0", "description": "",
        "links": [{"rel": "child", "href": "./s2/collection.json"}, {"rel": "self", "href": "./catalog.json"}]}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(root / "catalog.json"), "-o", str(out), "--device", "cpu", "--quiet",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["done"] == 2
    assert (out / "a.mask.tif").is_file() and (out / "b.mask.tif").is_file()
    (root / "remote.json").write_text(json.dumps({"type": "Catalog", "id": "r", "links": [
        {"rel": "item", "href": "https://example.com/x.json"}]}))
    remote = runner.invoke(app, ["batch", str(root / "remote.json"), "-o", str(out), "--device", "cpu"])
    assert remote.exit_code == 2 and remote.stderr.count("\n") == 1 and "local static catalogs" in remote.stderr


def test_info_says_which_asset_feeds_which_input_and_writes_nothing(tmp_path) -> None:
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands", coarse=("B11", "B12"))
    item = _item(tmp_path, files, scale=0.0001, offset=0.0)
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, ["info", str(item), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["path"] == str(item) and facts["size"].startswith(f"{_labels(scene).shape[1]} x")
    assert facts["inputs"][0].startswith("blue <- ") and str(files[0]) in facts["inputs"][0]
    assert facts["inputs"][5].startswith("swir22 <- ") and str(files[5]) in facts["inputs"][5]
    assert sorted(tmp_path.rglob("*")) == before  # no stack written beside the Item
    folder = runner.invoke(app, ["info", str(tmp_path / "bands"), "--json"])
    assert folder.exit_code == 0 and len(json.loads(folder.stdout)["inputs"]) == 6


def test_an_item_republished_with_a_new_updated_time_is_segmented_again(tmp_path) -> None:
    """A provider republishes an asset at the same href and says so in ``updated``: the rerun redoes the scene (the
    stack's text changes), and the log names the Item by its id and updated time."""
    scene = _scene(tmp_path)
    files = _split(scene, tmp_path / "bands")
    item = _item(tmp_path, files, scale=None, offset=None)
    data = json.loads(item.read_text())
    data["properties"]["updated"] = "2024-01-01T00:00:00Z"
    item.write_text(json.dumps(data))
    out = tmp_path / "out"
    args = ["batch", str(item), "-o", str(out), "--device", "cpu", "--quiet", "--json"]
    assert json.loads(runner.invoke(app, args).stdout)["counts"]["done"] == 1
    assert json.loads(runner.invoke(app, args).stdout)["counts"]["skipped"] == 1
    data["assets"]["B04"]["updated"] = "2025-06-01T00:00:00Z"
    item.write_text(json.dumps(data))
    assert json.loads(runner.invoke(app, args).stdout)["counts"]["done"] == 1
    events = [json.loads(line) for line in (out / "geoseg-batch.jsonl").read_text().splitlines()]
    done = [e for e in events if e["event"] == "scene_done"]
    assert done[-1]["item"] == "S2A_T33UUU_20170216"
    assert done[-1]["item_updated"] == "2024-01-01T00:00:00Z,2025-06-01T00:00:00Z"


def test_remote_sources_are_named_quietly_in_the_vrt_and_plainly_to_the_user() -> None:
    from geoseg.io.names import plain_source, quiet_source

    signed = "/vsicurl/https://example.blob.core.windows.net/c/T33_B02.tif?st=2026-12-06&sig=a%2Bb&sp=r"
    quiet = quiet_source(signed)
    assert quiet.startswith("/vsicurl?empty_dir=yes&url=") and "?st=" not in quiet  # the URL's own query is quoted
    assert plain_source(quiet) == signed
    for other in ("/vsis3/bucket/B02.tif", "/data/B02.tif", "/vsizip/a.zip/B02.jp2"):
        assert quiet_source(other) == other and plain_source(other) == other


def test_one_remote_raster_by_url_gives_the_local_file_s_mask(tmp_path, monkeypatch) -> None:
    """``geoseg run URL`` and ``geoseg info URL`` (issue 31 item 3): a multi-band COG over HTTP is read through a
    local VRT of its bands; the mask goes to the current folder and equals the local file's."""
    scene = _scene(tmp_path)
    (tmp_path / "served").mkdir()
    served = tmp_path / "served" / scene.name  # the same name: it names the sensor
    served.write_bytes(scene.read_bytes())
    monkeypatch.chdir(tmp_path)
    with RangeServer(served.parent) as server:
        url = server.url(scene.name)
        result = CliRunner().invoke(app, ["run", url, "--json", "--device", "cpu", "--precision", "fp32"])
        assert result.exit_code == 0, result.output
        assert "remote source" not in result.output  # asked for: no warning
        described = CliRunner().invoke(app, ["info", url, "--json"])
        assert described.exit_code == 0, described.output
        missing = CliRunner().invoke(app, ["run", server.url("nothing.tif")])
        misses = server.misses
        batch = CliRunner().invoke(app, ["batch", url, "-o", str(tmp_path / "b"), "--device", "cpu", "--precision",
                                         "fp32"])
    assert batch.exit_code == 0 and f"done      {url}:" in batch.output, batch.output
    name = f"{scene.stem}.mask.tif"
    assert np.array_equal(_labels(tmp_path / "b" / name), _labels(tmp_path / name))
    _run(str(scene), "-o", str(tmp_path / "local.tif"))
    assert np.array_equal(_labels(tmp_path / f"{scene.stem}.mask.tif"), _labels(tmp_path / "local.tif"))
    facts = json.loads(described.output)
    assert facts["path"] == url and facts["driver"] == "remote raster" and facts["remote_sources"]
    assert missing.exit_code == 3 and "nothing.tif: cannot be read" in missing.output
    assert "Traceback" not in missing.output and misses == 1  # the one file asked for; no side-car probes


@pytest.mark.skipif(not S2_SCENE.exists(), reason="needs the real Sentinel-2 scene and its labels")
def test_training_reads_remote_images_and_labels(tmp_path) -> None:
    """``geoseg train URL --labels URL`` (issue 31 item 3): the same package as from the local files."""
    labels = S2 / "S2A_T33UUU_20170216_osm_landuse_labels_10m.tif"
    common = ["--encoder", "resnet18", "--epochs", "1", "--chip-size", "128", "--chips-per-epoch", "8",
              "--batch-size", "4", "--device", "cpu", "--json"]
    (tmp_path / "served").mkdir()
    for source in (S2_SCENE, labels):
        (tmp_path / "served" / source.name).write_bytes(source.read_bytes())

    def train(image: str, label: str, out: str) -> dict:
        result = CliRunner().invoke(app, ["train", image, "--labels", label, "-o", str(tmp_path / out), *common])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    with RangeServer(tmp_path / "served") as server:
        remote = train(server.url(S2_SCENE.name), server.url(labels.name), "remote")
    local = train(str(S2_SCENE), str(labels), "local")
    assert remote["validation"] == local["validation"] and remote["val_cells"] == local["val_cells"]
    assert json.loads((tmp_path / "remote" / "geoseg.json").read_text())["classes"] == \
        json.loads((tmp_path / "local" / "geoseg.json").read_text())["classes"]
