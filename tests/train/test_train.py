"""``geoseg train`` on the CPU: the loss really goes down (a stated accuracy on its own chips), the split
is spatial, --resume goes on from the checkpoint, and the package runs in ``geoseg run``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.config import RunConfig
from geoseg.errors import ConfigError, ModelError
from geoseg.run import segment_scene
from geoseg.train.chips import split_cells
from geoseg.train.evaluate import evaluate_mask
from geoseg.train.trainer import TrainConfig, _images, train
from tests.helpers import geoseg_process, smooth_image, write_tif

runner = CliRunner()
S2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sentinel2-t33uuu"


def learnable_scene(tmp_path: Path, size: int = 256) -> tuple[Path, Path]:
    """Three bands of blocky random fields plus noise, and labels the fields decide (class = which band's
    field is largest),
    with an unlabelled stripe (0) and labels named in a CLASSES tag as geoseg masks write them."""
    rng = np.random.default_rng(3)
    coarse = rng.normal(size=(3, size // 16, size // 16)).repeat(16, axis=1).repeat(16, axis=2)
    data = coarse + 0.2 * rng.normal(size=coarse.shape)
    labels = (np.argmax(coarse, axis=0) + 1).astype(np.uint8)
    labels[:, :16] = 0
    image = write_tif(tmp_path / "image.tif", np.clip(2000 + 800 * data, 1, 60000).astype(np.uint16),
                      descriptions=("red", "green", "blue"))
    label_path = write_tif(tmp_path / "labels.tif", labels[None], nodata=0)
    with rasterio.open(label_path, "r+") as ds:
        ds.update_tags(CLASSES=json.dumps(["unlabelled", "reddish", "greenish", "blueish"]))
    return image, label_path


CONFIG = TrainConfig(encoder="resnet18", epochs=8, batch_size=8, chip_size=64, chips_per_epoch=48,
                     learning_rate=3e-3, val_share=0.25, device="cpu", workers=0)


def test_training_learns_its_chips_and_the_package_runs(tmp_path) -> None:
    image, labels = learnable_scene(tmp_path)
    summary = train([image], [labels], tmp_path / "pkg", CONFIG)
    losses = [h.loss for h in summary.history]
    assert losses[-1] < 0.6 * losses[0], losses
    card = json.loads((tmp_path / "pkg" / "geoseg.json").read_text())
    assert card["bands"] == ["red", "green", "blue"] and [c["name"] for c in card["classes"]] == [
        "reddish", "greenish", "blueish"]
    assert card["scaling"]["integer_scale"] == 1e-4 and abs(card["mean"][0] - 0.2) < 0.05  # stats of the data
    # labels 1..3 became mask values 0..2, and the package says so (card, models show, the mask's tags)
    assert card["label_values"] == [1, 2, 3]
    shown = runner.invoke(app, ["models", "show", str(tmp_path / "pkg")], terminal_width=200).stdout
    assert "0 reddish" in shown and "(label value 1 in training)" in shown
    # the package, through geoseg run, labels its own training scene: the stated accuracy
    mask = tmp_path / "mask.tif"
    segment_scene(image, mask, RunConfig(model=str(tmp_path / "pkg"), device="cpu", precision="fp32"))
    accuracy = evaluate_mask(mask, labels)
    assert accuracy.overall >= 0.8, accuracy.to_dict()  # 0.90 here; chance is about 0.33
    with rasterio.open(mask) as ds:
        assert json.loads(ds.tags()["LABEL_VALUES"]) == [1, 2, 3]


def test_resume_goes_on_from_the_checkpoint(tmp_path) -> None:
    image, labels = learnable_scene(tmp_path)
    first = train([image], [labels], tmp_path / "pkg", TrainConfig(**{**CONFIG.__dict__, "epochs": 2}),
                  keep_checkpoint=True)
    assert (tmp_path / "pkg.train" / "checkpoint.pt").is_file() and first.epochs_run == 2
    again = train([image], [labels], tmp_path / "pkg", TrainConfig(**{**CONFIG.__dict__, "epochs": 3}), resume=True,
                  keep_checkpoint=True)
    assert [h.epoch for h in again.history] == [1, 2, 3]
    assert [h.loss for h in again.history[:2]] == [h.loss for h in first.history]
    saved = torch.load(tmp_path / "pkg.train" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 3


def test_the_validation_split_is_spatial(tmp_path) -> None:
    image, labels = learnable_scene(tmp_path, size=512)
    images, _, _ = _images([image], [labels], CONFIG, None, "class")
    train_cells, val_cells, how = split_cells(images, 64, 0.25)
    assert how == "cells within each image"
    assert val_cells and train_cells
    held = {(c.row0, c.col0) for c in val_cells}
    assert not held & {(c.row0, c.col0) for c in train_cells}
    assert all(c.size == 128 for c in train_cells + val_cells)  # training chips stay inside their cell


def test_an_image_of_fewer_cells_than_the_share_needs_still_validates_on_one(tmp_path) -> None:
    image, labels = learnable_scene(tmp_path, size=256)  # 4 cells of 128 px; the default share holds every 5th
    images, _, _ = _images([image], [labels], CONFIG, None, "class")
    train_cells, val_cells, how = split_cells(images, 64, 0.2)
    assert how == "cells within each image" and len(val_cells) == 1 and len(train_cells) == 3


def test_vector_labels_are_rasterised_on_the_fly(tmp_path) -> None:
    import pyogrio  # noqa: F401 - the writer below
    import shapely
    from pyogrio.raw import write

    image = write_tif(tmp_path / "image.tif", smooth_image((3, 256, 256), dtype="uint16"))
    x0, y0 = 330000, 5822040
    left = shapely.box(x0, y0 - 2560, x0 + 1280, y0)
    right = shapely.box(x0 + 1280, y0 - 2560, x0 + 2560, y0)
    write(str(tmp_path / "labels.gpkg"), shapely.to_wkb(np.array([left, right])), [np.array(["water", "forest"],
          dtype=object)], fields=["class"], geometry_type="Polygon", crs="EPSG:32633")
    images, _, table = _images([image], [tmp_path / "labels.gpkg"], CONFIG, None, "class")
    assert list(table.values()) == ["forest", "water"]
    window = images[0].labels.read(0, 120, 8, 16)
    assert (window[:, :8] == 1).all() and (window[:, 8:] == 0).all()


def test_evaluate_against_a_hand_computed_confusion_matrix(tmp_path) -> None:
    mask = np.array([[0, 0, 1, 1], [0, 1, 1, 2], [2, 2, 2, 255], [0, 1, 2, 2]], np.uint8)
    ref = np.array([[1, 1, 2, 2], [1, 1, 2, 3], [3, 3, 3, 3], [0, 0, 3, 1]], np.uint8)  # 0 unlabelled
    mask_path = write_tif(tmp_path / "mask.tif", mask[None], nodata=255, block=16)
    ref_path = write_tif(tmp_path / "ref.tif", ref[None], nodata=0, block=16)
    for path, names in ((mask_path, ["a", "b", "c"]), (ref_path, ["unlabelled", "a", "b", "c"])):
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(CLASSES=json.dumps(names))
    # by hand, pixel by pixel (reference class -> predicted class), rows of the grids above:
    #   row 0: a->a, a->a, b->b, b->b     row 1: a->a, a->b, b->b, c->c
    #   row 2: c->c x3 (the 4th is predicted 255: out)     row 3: two unlabelled (out), c->c, a->c
    expected = np.array([[3, 1, 1],
                         [0, 3, 0],
                         [0, 0, 5]])
    result = evaluate_mask(mask_path, ref_path, window_rows=3)
    assert (result.matrix == expected).all(), result.matrix
    assert result.match == "name"  # both sides name their classes
    assert result.left_out == {"the mask has no data or no class there": 1, "label value outside the class table": 0,
                               "label class with no mask class": 0}  # the c predicted 255; unlabelled px are no labels
    assert result.overall == pytest.approx(11 / 13)
    pe = (5 * 3 + 3 * 4 + 5 * 6) / 13**2  # reference row sums x predicted column sums
    assert result.kappa == pytest.approx((11 / 13 - pe) / (1 - pe))
    assert result.iou.tolist() == pytest.approx([3 / 5, 3 / 4, 5 / 6])
    assert result.f1.tolist() == pytest.approx([2 * 3 / 8, 2 * 3 / 7, 2 * 5 / 11])
    out = runner.invoke(app, ["evaluate", str(mask_path), str(ref_path), "--json", "-o", str(tmp_path / "e.csv")])
    assert out.exit_code == 0 and json.loads(out.stdout)["confusion_matrix"] == expected.tolist()
    assert (tmp_path / "e.csv").read_text().splitlines()[0].startswith("value,name,reference_pixels")
    assert json.loads(out.stdout)["confusion_matrix_axes"] == {"rows": "reference", "columns": "predicted",
                                                               "labels": ["a", "b", "c"]}
    text = runner.invoke(app, ["evaluate", str(mask_path), str(ref_path)], terminal_width=200).stdout
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.startswith("│") and line.split("│")[1].strip()[:1].isdigit()}
    assert rows["0 a"][-3:] == ["3", "1", "1"] and rows["2 c"][-3:] == ["0", "0", "5"]  # the matrix, named
    image = write_tif(tmp_path / "image.tif", np.zeros((3, 4, 4), np.uint16), block=16)
    wrong = runner.invoke(app, ["evaluate", str(mask_path), str(image)])
    assert wrong.exit_code == 3 and "labels must be one band of class values" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not S2.exists(), reason="real Sentinel-2 scene not in ../shared/data")
def test_cli_train_on_the_real_scene_with_osm_labels(tmp_path) -> None:
    scene = S2 / "S2A_T33UUU_20170216_L1C_B02-B03-B04-B08-B11-B12_10m.tif"
    labels = S2 / "S2A_T33UUU_20170216_osm_landuse_labels_10m.tif"
    result = runner.invoke(app, ["train", str(scene), "--labels", str(labels), "-o", str(tmp_path / "lc"),
                                 "--encoder", "resnet18", "--epochs", "1", "--chip-size", "128",
                                 "--chips-per-epoch", "16", "--batch-size", "8", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["val_cells"] > 0 and len(summary["validation"]["classes"]) == 8
    card = json.loads((tmp_path / "lc" / "geoseg.json").read_text())
    assert card["bands"] == ["blue", "green", "red", "nir", "swir16", "swir22"] and card["resolution_m"] == 10


def test_init_from_the_builtin_encoder_follows_bands_by_name() -> None:
    from geoseg.models import load_model
    from geoseg.train.trainer import build_model

    config = TrainConfig(encoder="efficientnet-b4", init="csmask-4b-l1c")
    net = build_model(config, 3, 5, ("red", "nir", "thermal"))
    builtin = load_model("csmask-4b-l1c")
    ours, theirs = net.encoder._conv_stem.weight, builtin.network.encoder._conv_stem.weight
    bands = builtin.card.bands
    assert torch.equal(ours[:, 0], theirs[:, bands.index("red")])
    assert torch.equal(ours[:, 1], theirs[:, bands.index("nir")])
    assert torch.allclose(ours[:, 2], theirs.mean(1))  # a band the built-in model never saw
    with pytest.raises(ConfigError, match="its encoder is efficientnet-b4; pass --encoder efficientnet-b4"):
        build_model(TrainConfig(encoder="resnet18", init="csmask-4b-l1c"), 3, 5, ("red", "nir", "blue"))


def test_imagenet_init_never_downloads(monkeypatch, tmp_path) -> None:
    from geoseg.train.trainer import build_model

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError, match=r"not in the local cache.*geoseg never downloads"):
        build_model(TrainConfig(encoder="resnet18", init="imagenet"), 3, 2, ("red", "green", "blue"))


def test_imagenet_init_takes_the_weights_from_the_local_cache(monkeypatch, tmp_path) -> None:
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    from geoseg.train.trainer import build_model

    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    cache = tmp_path / "hub"
    snapshot = cache / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    weights = smp.encoders.get_encoder("resnet18", in_channels=3).state_dict()  # stands in for ImageNet's
    save_file(weights, str(snapshot / "model.safetensors"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    net = build_model(TrainConfig(encoder="resnet18", init="imagenet"), 4, 2, ("red", "green", "blue", "nir"))
    assert torch.equal(net.encoder.layer1[0].conv1.weight, weights["layer1.0.conv1.weight"])
    assert net.encoder.conv1.weight.shape[1] == 4  # RGB filters spread over 4 bands, as smp does


def test_a_training_stopped_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch) -> None:
    image = write_tif(tmp_path / "img.tif", np.random.default_rng(0).normal(size=(3, 256, 256)).astype("float32"))
    labels = write_tif(tmp_path / "lab.tif", (np.arange(256 * 256).reshape(1, 256, 256) % 2).astype(np.uint8))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("geoseg.train.trainer.torch.save", interrupted)  # Ctrl-C as the first checkpoint is saved
    with pytest.raises(KeyboardInterrupt):
        train([image], [labels], tmp_path / "pkg", TrainConfig(**{**CONFIG.__dict__, "epochs": 1}),
              classes=["a", "b"])
    assert not (tmp_path / "pkg.train").exists() and not (tmp_path / "pkg").exists()


def test_train_usage_errors_answer_without_importing_torch() -> None:
    code = ("import sys; from typer.testing import CliRunner; from geoseg.cli.app import app; "
            "r = CliRunner().invoke(app, ['train', 'a.tif', '--labels', 'b.tif', '-o', 'x', '--chip-size', '100']); "
            "print(r.exit_code, 'torch' in sys.modules)")
    out = __import__("subprocess").run([__import__("sys").executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr


def test_a_finished_training_removes_its_checkpoint_unless_kept(tmp_path) -> None:
    """The checkpoint holds the network twice and the optimizer's moments (about 4x the package)."""
    image, labels = learnable_scene(tmp_path)
    train([image], [labels], tmp_path / "pkg", TrainConfig(**{**CONFIG.__dict__, "epochs": 1}))
    assert (tmp_path / "pkg" / "model.safetensors").is_file() and not (tmp_path / "pkg.train").exists()


def _named(path, names) -> None:
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(CLASSES=json.dumps(names))


def test_evaluate_never_drops_a_reference_class_silently(tmp_path) -> None:
    """The issue's case: labels tagged clear / cloud / shadow against a mask of clear / cloud / cloud shadow. By
    name, "shadow" is the mask's "cloud shadow" (synonyms), so every labelled pixel counts; a class that matches
    nothing stops the evaluation in one line naming it; by value, nothing is matched by name and the pixels with
    a value outside the labels' class table are counted as left out."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (40, 50), dtype=np.uint8)
    ref = mask.copy()
    ref[:5] = (ref[:5] + 1) % 3  # some disagreement
    mask_path = write_tif(tmp_path / "mask.tif", mask[None], nodata=255, block=16)
    _named(mask_path, ["clear", "cloud", "cloud shadow"])
    ref_path = write_tif(tmp_path / "ref.tif", ref[None], block=16)
    _named(ref_path, ["Clear", "clouds", "shadow"])
    result = evaluate_mask(mask_path, ref_path)
    assert result.match == "name" and result.total == mask.size and not any(result.left_out.values())
    assert result.matrix[2].sum() == (ref == 2).sum() > 0  # the shadow pixels are in the matrix

    _named(ref_path, ["clear", "cloud", "haze"])
    stopped = runner.invoke(app, ["evaluate", str(mask_path), str(ref_path)])
    assert stopped.exit_code == 2 and "'haze' match no class" in stopped.stderr
    assert len(stopped.stderr.strip().splitlines()) == 1

    ref[0, :7] = 7  # a value the labels' table does not list
    write_tif(ref_path, ref[None], block=16)
    _named(ref_path, ["clear", "cloud", "haze"])
    by_value = runner.invoke(app, ["evaluate", str(mask_path), str(ref_path), "--match", "value", "--json"])
    assert by_value.exit_code == 0, by_value.output
    report = json.loads(by_value.stdout)
    assert report["match"] == "value" and report["pixels"] == mask.size - 7
    assert report["left_out"]["label value outside the class table"] == 7
    text = runner.invoke(app, ["evaluate", str(mask_path), str(ref_path), "--match", "value"], terminal_width=200)
    assert "classes matched by value; labelled pixels left out: 7 px: label value outside the class table" in \
        " ".join(text.stdout.split())


def test_init_from_a_builtin_model_implies_its_encoder() -> None:
    assert TrainConfig(init="csmask-6b-l1c").encoder == "efficientnet-b4"
    assert TrainConfig().encoder == "resnet34" and TrainConfig(encoder="vgg16").encoder == "vgg16"


def test_several_label_files_after_one_labels_option_get_a_line_that_says_how(tmp_path) -> None:
    images = [write_tif(tmp_path / f"{n}.tif", np.zeros((3, 64, 64), np.uint16)) for n in "ab"]
    result = runner.invoke(app, ["train", *map(str, images), "--labels", str(tmp_path / "a_lab.tif"),
                                 str(tmp_path / "b_lab.tif"), "-o", str(tmp_path / "pkg")])
    assert result.exit_code == 2 and "each after its own --labels" in result.stderr


def test_a_chip_dataset_holds_out_whole_images(tmp_path) -> None:
    """Ten 128² chips at --chip-size 64 hold one cell each: split within each image, none would be held out
    (the issue's "0 validation"); whole images are held out instead, and training runs."""
    pairs = []
    for i in range(10):
        folder = tmp_path / f"chip{i}"
        folder.mkdir()
        image, labels = learnable_scene(folder, size=128)
        pairs.append((image, labels))
    images = [p[0] for p in pairs]
    labels = [p[1] for p in pairs]
    found, _, _ = _images(images, labels, CONFIG, None, "class")
    train_cells, val_cells, how = split_cells(found, 64, 0.25)
    assert how == "whole images" and val_cells and train_cells
    held = {c.image for c in val_cells}
    assert len(held) == 2 and not held & {c.image for c in train_cells}  # a quarter of ten images, none shared
    summary = train(images, labels, tmp_path / "pkg", TrainConfig(**{**CONFIG.__dict__, "epochs": 1}))
    assert summary.split == "whole images" and summary.val_cells == len(val_cells)


def test_chips_exactly_one_chip_in_size_train(tmp_path) -> None:
    """A chip dataset's files are often the chip size itself (256² files, --chip-size 256): each file is one cell
    of its own size, whole images are held out, and training runs (it used to ask for files twice the chip)."""
    images, labels = [], []
    for i in range(6):
        folder = tmp_path / f"chip{i}"
        folder.mkdir()
        image, label = learnable_scene(folder, size=64)
        images.append(image)
        labels.append(label)
    found, _, _ = _images(images, labels, CONFIG, None, "class")
    train_cells, val_cells, how = split_cells(found, 64, 0.2)
    assert how == "whole images" and all(c.size == 64 for c in train_cells + val_cells) and val_cells
    summary = train(images, labels, tmp_path / "pkg", TrainConfig(**{**CONFIG.__dict__, "epochs": 1}))
    assert summary.epochs_run == 1 and summary.val_cells >= 1
    small = runner.invoke(app, ["train", str(images[0]), "--labels", str(labels[0]), "-o", str(tmp_path / "p2"),
                                "--chip-size", "128", "--device", "cpu"])
    assert small.exit_code == 2 and "smaller than --chip-size 128" in small.stderr


def test_a_folder_of_chips_pairs_with_a_folder_of_labels_by_name(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(4):
        image, labels = learnable_scene(tmp_path, size=128)
        image.rename(tmp_path / "images" / f"tile_{i}.tif")
        labels.rename(tmp_path / "labels" / f"tile_{i}.tif")
    result = runner.invoke(app, ["train", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "-o",
                                 str(tmp_path / "pkg"), "--encoder", "resnet18", "--epochs", "1", "--chip-size", "64",
                                 "--chips-per-epoch", "8", "--batch-size", "4", "--device", "cpu", "--workers", "0",
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["split"] == "whole images" and summary["val_cells"] >= 1
    (tmp_path / "labels" / "tile_3.tif").unlink()
    missing = runner.invoke(app, ["train", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "-o",
                                  str(tmp_path / "pkg2"), "--device", "cpu"])
    assert missing.exit_code == 2 and "tile_3.tif" in missing.stderr


@pytest.mark.parametrize("encoder", ["tu-convnext_tiny", "tu-efficientnetv2_s"])
def test_timm_encoders_train_run_and_export(tmp_path, encoder) -> None:
    """smp's timm universal encoders (``tu-`` + any timm model with features): trained, run, exported."""
    image, labels = learnable_scene(tmp_path)
    config = TrainConfig(**{**CONFIG.__dict__, "encoder": encoder, "epochs": 1, "chips_per_epoch": 8,
                            "batch_size": 4})
    result = train([image], [labels], tmp_path / "pkg", config)
    assert result.epochs_run == 1 and np.isfinite(result.history[0].loss)
    summary = segment_scene(image, tmp_path / "m.tif", RunConfig(model=str(tmp_path / "pkg"), device="cpu",
                                                               precision="fp32", backend="torch"))
    assert summary.patches > 0
    exported = runner.invoke(app, ["models", "export", str(tmp_path / "pkg"), "-o", str(tmp_path / "m.onnx")])
    assert exported.exit_code == 0, exported.output
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.read(1).max() < 3


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path) -> None:
    """A full disk at the checkpoint (a file-size limit stands in for it) ends in exit 6 on one line, with no
    package, no ``.partial`` and no empty ``.train`` folder left (torch.save reports it as a RuntimeError)."""
    image, labels = learnable_scene(tmp_path)
    code, stderr, _ = geoseg_process(["train", str(image), "--labels", str(labels), "-o", str(tmp_path / "pkg"),
                                      "--encoder", "resnet18", "--epochs", "1", "--chip-size", "64",
                                      "--chips-per-epoch", "4", "--batch-size", "4", "--device", "cpu",
                                      "--workers", "0"], file_limit=2_000_000)  # the checkpoint is ~200 MB
    assert code == 6, stderr
    *progress, error = stderr.strip().splitlines()  # the epoch's progress line, then the error
    assert [line.split(":")[0] for line in progress] == ["epoch 1/1"], stderr
    assert error.startswith("geoseg: error: ") and "checkpoint after epoch 1 could not be written" in error
    assert "--resume" in error and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "labels.tif"]
