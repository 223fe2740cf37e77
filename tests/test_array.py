"""segment_array (geoseg/array.py): lazy labels from dask / xarray pixels, bit-identical to segment_scene."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio

from geoseg import RunConfig, segment_array, segment_scene
from geoseg.errors import ConfigError
from tests.helpers import smooth_image, write_tif

rioxarray = pytest.importorskip("rioxarray")

FP32 = {"device": "cpu", "precision": "fp32", "backend": "torch"}


@pytest.fixture
def scene(make_tif, tiny_model, tmp_path):
    image = smooth_image((3, 211, 333), seed=7, dtype="uint16")
    image[:, :15, :25] = 0
    path = make_tif(image, nodata=0, descriptions=("b1", "b2", "b3"))
    model = tiny_model()
    segment_scene(path, tmp_path / "ref.tif", RunConfig(**FP32, probabilities="all"), model=model)
    with rasterio.open(tmp_path / "ref.tif") as ds:
        labels = ds.read(1)
    with rasterio.open(tmp_path / "ref.probs.tif") as ds:
        probs = ds.read()
    return path, model, labels, probs


@pytest.mark.parametrize("chunks", [48, (100, 333), (211, 90)], ids=["small-squares", "row-bands", "column-bands"])
def test_labels_equal_segment_scene_for_any_chunking(scene, chunks) -> None:
    path, model, reference, _ = scene
    rows, cols = (chunks, chunks) if isinstance(chunks, int) else chunks
    pixels = rioxarray.open_rasterio(path, chunks={"band": -1, "y": rows, "x": cols})
    labels = segment_array(pixels, model, **FP32)
    assert isinstance(labels.data, da.Array)  # lazy until asked
    assert labels.chunks == pixels.chunks[1:]  # chunked like the input
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(labels.values, reference)
    assert (reference == 255).any() and len(np.unique(reference)) >= 3


def test_probabilities_and_georeferencing_follow_the_input(scene, tmp_path) -> None:
    path, model, reference, reference_probs = scene
    pixels = rioxarray.open_rasterio(path, chunks={"band": -1, "y": 64, "x": 128})
    labels, probs = segment_array(pixels, model, probabilities="all", **FP32)
    np.testing.assert_array_equal(probs.values, reference_probs)
    assert list(probs.band.values) == ["a", "b", "c"]
    labels.rio.to_raster(tmp_path / "from-xarray.tif")  # rioxarray's writer computes it chunk by chunk
    with rasterio.open(tmp_path / "from-xarray.tif") as ours, rasterio.open(path) as source:
        assert ours.transform == source.transform and ours.crs == source.crs
        assert ours.nodata == 255
        np.testing.assert_array_equal(ours.read(1), reference)


def test_odc_geo_writes_the_labels_as_a_cog(scene, tmp_path) -> None:
    pytest.importorskip("odc.geo.xr")
    path, model, reference, _ = scene
    pixels = rioxarray.open_rasterio(path, chunks={"band": -1, "y": 128, "x": 128})
    labels = segment_array(pixels, model, **FP32)
    labels.odc.write_cog(tmp_path / "odc.tif", overwrite=True)  # odc-geo's writer: grid from the coordinates
    with rasterio.open(tmp_path / "odc.tif") as ours, rasterio.open(path) as source:
        assert ours.transform == source.transform and ours.crs == source.crs
        np.testing.assert_array_equal(ours.read(1), reference)


def test_numpy_and_dask_inputs_with_a_transform(scene) -> None:
    path, model, reference, _ = scene
    with rasterio.open(path) as ds:
        values, transform, crs = ds.read(), ds.transform, ds.crs
    labels = segment_array(values, model, transform=transform, crs=crs, nodata=0, **FP32)
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), reference)
    lazy = da.from_array(values, chunks=(3, 70, 70))
    np.testing.assert_array_equal(segment_array(lazy, model, transform=transform, crs=crs, nodata=0,
                                                **FP32).compute(), reference)


def test_bands_are_matched_by_name(scene) -> None:
    path, model, reference, _ = scene
    pixels = rioxarray.open_rasterio(path, chunks={"band": -1, "y": 100, "x": 100})
    shuffled = pixels.isel(band=[2, 0, 1]).assign_coords(band=["b3", "b1", "b2"])
    np.testing.assert_array_equal(segment_array(shuffled, model, **FP32).values, reference)


def test_mistakes_are_named(scene) -> None:
    _, model, _, _ = scene
    with pytest.raises(ConfigError, match=r"unknown setting.*tile_sise"):
        segment_array(np.zeros((3, 64, 64), np.float32), model, tile_sise=64)
    with pytest.raises(ConfigError, match=r"give \(band, y, x\)"):
        segment_array(np.zeros((1, 3, 64, 64), np.float32), model)
    with pytest.raises(ConfigError, match="2 band names for 3 bands"):
        segment_array(np.zeros((3, 64, 64), np.float32), model, band_names=["a", "b"])


def test_a_lazy_odc_stac_source_over_a_local_catalogue(tmp_path, tiny_model) -> None:
    """odc-stac loads a local STAC catalogue (one single-band COG per band) lazily; its labels equal the
    file engine's on the same pixels stacked into one file."""
    odc_stac = pytest.importorskip("odc.stac")
    pystac = pytest.importorskip("pystac")
    from pystac.extensions.projection import ProjectionExtension

    image = smooth_image((3, 150, 190), seed=11, dtype="uint16")
    stacked = write_tif(tmp_path / "stacked.tif", image, descriptions=("b1", "b2", "b3"))
    with rasterio.open(stacked) as ds:
        transform, crs, bbox = ds.transform, ds.crs, ds.bounds
    item = pystac.Item("scene", geometry=None, bbox=None, datetime=__import__("datetime").datetime(2020, 1, 1),
                       properties={})
    ProjectionExtension.add_to(item)
    proj = ProjectionExtension.ext(item)
    proj.epsg, proj.transform, proj.shape = crs.to_epsg(), list(transform)[:6], [150, 190]
    for i, name in enumerate(("b1", "b2", "b3")):
        band = write_tif(tmp_path / f"{name}.tif", image[i : i + 1])
        item.add_asset(name, pystac.Asset(str(band), media_type=pystac.MediaType.COG, roles=["data"]))
    catalog = pystac.Catalog("local", "a catalogue of local files")
    catalog.add_item(item)
    catalog.normalize_and_save(str(tmp_path / "catalog"), pystac.CatalogType.ABSOLUTE_PUBLISHED)
    items = list(pystac.Catalog.from_file(str(tmp_path / "catalog" / "catalog.json")).get_items(recursive=True))

    loaded = odc_stac.load(items, bands=["b1", "b2", "b3"], chunks={"x": 64, "y": 64}).isel(time=0)
    pixels = loaded.to_dataarray("band")
    model = tiny_model()
    labels = segment_array(pixels, model, **FP32)
    segment_scene(stacked, tmp_path / "ref.tif", RunConfig(**FP32), model=model)
    with rasterio.open(tmp_path / "ref.tif") as ds:
        np.testing.assert_array_equal(labels.values, ds.read(1))
    assert tuple(labels.rio.transform())[:6] == tuple(transform)[:6]
    del bbox
