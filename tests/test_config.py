"""RunConfig checks itself where it is declared: the command line, a job file, segment_array and the Python
API refuse a bad value with the same one line, and the value lists that registries in higher layers are
keyed by exist once (geoseg.config)."""

from __future__ import annotations

import dask.array as da
import pytest
from typer.testing import CliRunner

from geoseg import config
from geoseg.batch.jobs import load_job_file
from geoseg.cli.app import app
from geoseg.config import RunConfig
from geoseg.errors import ConfigError

runner = CliRunner()

#: (setting, a bad value as the Python API and a job file give it, the same as the command line types it, message)
BAD = [
    ("blend", "box", "box", "blend window 'box' is not one of cosine, gaussian, none"),
    ("tile_size", 100, "100", "tile size 100 is not a positive multiple of 32"),
    ("tile_size", 65536, "65536", "tile size 65536 is larger than 4096"),
    ("batch_size", 0, "0", "batch size 0 must lie in 1..1024"),
    ("batch_size", 10**9, "1000000000", "batch size 1000000000 must lie in 1..1024"),
    ("block_size", 10**6, "1000000", "block size 1000000 must lie in 1..32768"),
    ("workers", 0, "0", "workers 0 must lie in 1..1024"),
    ("output_format", "png", "png", "output format 'png' is not one of cog, gtiff"),
    ("decode", "fpga", "fpga", "decode 'fpga' is not one of auto, cpu, gpu, hybrid"),
    ("backend", "tensorrt", "tensorrt", "backend 'tensorrt' is not one of auto, torch, onnxruntime, openvino"),
    ("precision", "int8", "int8", "precision 'int8' is not one of auto, fp32, bf16, fp16"),
    ("device", "gpu", "gpu", "device 'gpu' is not valid; use auto, cpu, cuda or cuda:N"),
    ("overlap", -1, "-1", "overlap -1 must lie in 0..4095"),
]


@pytest.mark.parametrize(("name", "value", "text", "message"), BAD, ids=[f"{b[0]}={b[2]}" for b in BAD])
def test_a_bad_setting_gives_the_same_line_everywhere(tmp_path, make_tif, name, value, text, message) -> None:
    with pytest.raises(ConfigError) as api:
        RunConfig(**{name: value})
    assert message in str(api.value)

    job = tmp_path / "job.yaml"
    job.write_text(f"inputs: [a.tif]\noutput_dir: out\n{name}: {text}\n")
    with pytest.raises(ConfigError) as from_file:
        load_job_file(job)
    assert message in str(from_file.value) and str(job) in str(from_file.value)

    with pytest.raises(ConfigError) as from_array:
        import geoseg

        geoseg.segment_array(da.zeros((3, 64, 64), chunks=32), model="auto", **{name: value})
    assert message in str(from_array.value)

    scene = make_tif(__import__("numpy").zeros((3, 64, 64), "float32"))
    flag = "--format" if name == "output_format" else f"--{name.replace('_', '-')}"
    result = runner.invoke(app, ["run", str(scene), flag, text])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in " ".join(result.stderr.split()), result.stderr


def test_numbers_must_be_finite() -> None:
    with pytest.raises(ConfigError, match="scale nan must be a finite number"):
        RunConfig(scale=float("nan"))


def test_the_registries_are_keyed_by_the_declared_names() -> None:
    from geoseg.engine.windows import BLEND_WINDOWS
    from geoseg.io.writing import RASTER_FORMATS

    assert tuple(BLEND_WINDOWS) == config.BLEND_WINDOW_NAMES
    assert tuple(RASTER_FORMATS) == config.OUTPUT_FORMATS


def test_the_python_api_may_still_give_its_own_blend_window() -> None:
    import numpy as np

    assert callable(RunConfig(blend=lambda tile, overlap: np.ones(tile)).blend)


def test_every_default_is_a_valid_setting() -> None:
    RunConfig()  # made at import as every function's default: it must pass its own checks
    assert all(s.help for s in config.SETTINGS.values())
