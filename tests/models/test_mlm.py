"""A model as a STAC Item with the Machine Learning Model extension (``geoseg models show --stac``), valid
against MLM v1.5.0's official schema (kept offline in tests/data/stac with the schemas it refers to)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.models.mlm import MLM, _mlm_name
from geoseg.models.registry import get_card
from tests.helpers import module_package, validate_stac

runner = CliRunner()


def _item(model: str) -> dict:
    result = runner.invoke(app, ["models", "show", model, "--stac"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with module_package(tmp_path_factory, "mlm", "pkg") as package:
        yield package


def test_a_built_in_model_is_a_valid_mlm_item_that_says_what_the_card_says() -> None:
    item = _item("csmask-6b-l1c")
    validate_stac(item)
    assert MLM in item["stac_extensions"]
    card = get_card("csmask-6b-l1c")
    props = item["properties"]
    (given,) = props["mlm:input"]
    assert given["bands"] == list(card.bands) and given["input"]["shape"] == [-1, 6, card.tile_size, card.tile_size]
    assert [b["name"] for b in props["bands"]] == list(card.bands)
    (output,) = props["mlm:output"]
    classes = [(c["value"], c["name"]) for c in output["classification:classes"]]
    assert classes == [(c.value, c.name) for c in card.classes]
    assert output["result"]["shape"][1] == card.num_classes
    assert props["gsd"] == card.resolution_m and props["mlm:architecture"] == "U-Net"
    # One z-score on the integer pixels is the card's scaling followed by its standardisation.
    dn = np.array([0.0, 1234.0, 10000.0])
    for band, step in enumerate(given["value_scaling"]):
        ours = (dn * card.scaling.integer_scale + card.scaling.integer_offset - card.mean[band]) / card.std[band]
        np.testing.assert_allclose((dn - step["mean"]) / step["stddev"], ours, rtol=1e-12)
    assert item["assets"]["model"]["href"].endswith("model_6b_l1c.onnx")


def test_a_package_names_its_weights_and_counts_them(package) -> None:
    item = _item(str(package))
    validate_stac(item)
    weights = item["assets"]["model"]
    assert weights["mlm:artifact_type"] == "safetensors.torch.save_file" and "mlm:model" in weights["roles"]
    tensors = load_file(weights["href"])
    assert item["properties"]["mlm:total_parameters"] == sum(t.size for t in tensors.values())
    assert {item["assets"][k]["href"].rsplit("/", 1)[1] for k in ("card", "config")} == {"geoseg.json", "config.json"}
    assert item["properties"]["mlm:hyperparameters"]["_model_class"] == "Unet"


def test_an_onnx_file_is_described_as_onnx(package, tmp_path) -> None:
    out = tmp_path / "m.onnx"
    assert runner.invoke(app, ["models", "export", str(package), "-o", str(out)]).exit_code == 0
    item = _item(str(out))
    validate_stac(item)
    assert item["properties"]["mlm:framework"] == "ONNX" and item["assets"]["model"]["mlm:artifact_type"] == "onnx"


def test_the_schema_check_fails_where_the_item_breaks_the_extension() -> None:
    item = _item("csmask-4b-l2a")
    for breaking in (lambda d: d["assets"]["model"].update(roles=["data"]),  # no asset holds the model
                     lambda d: d["properties"]["mlm:input"][0]["input"].update(data_type="float33"),
                     lambda d: d["properties"].pop("mlm:tasks"),
                     lambda d: d["properties"]["mlm:output"][0]["classification:classes"][0].pop("value")):
        broken = copy.deepcopy(item)
        breaking(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate_stac(broken)


@pytest.mark.parametrize(("name", "expected"), [("csmask-6b-l1c", "csmask-6b-l1c"), ("land cover v2", "land cover v2"),
                                                ("2024 forests!", "model-2024 forests"), ("x", "geoseg-model")])
def test_names_fit_mlm_s_pattern(name, expected) -> None:
    assert _mlm_name(name) == expected


def test_an_unknown_model_is_one_line() -> None:
    result = runner.invoke(app, ["models", "show", "no-such-model", "--stac"])
    assert result.exit_code != 0 and "unknown model" in result.output and "Traceback" not in result.output
