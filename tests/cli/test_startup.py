"""First contact: help, version, listings and usage errors answer without importing torch, smp or timm,
and Ctrl-C is one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import write_tif

HEAVY = ("torch", "segmentation_models_pytorch", "timm", "torchvision")



def probe_script(heavy: tuple[str, ...]) -> str:
    """A Python script that runs geoseg's CLI on its arguments and prints, last on stderr, the exit code and
    which of ``heavy`` the process imported."""
    return f"""
import json, sys
from geoseg.cli.app import app
try:
    app(sys.argv[1:], standalone_mode=True)
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}), file=sys.stderr)
"""


PROBE = probe_script(HEAVY)


def probe(*args: str) -> tuple[int, list[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    last = json.loads(done.stderr.strip().splitlines()[-1])
    return last["code"], last["heavy"], done.stdout + done.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["models"], ["models", "sensors"], ["models", "cache"],
                                  ["run", "--help"],
                                  ["batch", "--help"], ["info", "--help"], ["train", "--help"],
                                  ["run", "missing.tif"], ["run", "--tile-size", "100", "missing.tif"]])
def test_answers_without_the_network_libraries(args) -> None:
    code, heavy, _ = probe(*args)
    assert heavy == [], f"{args} imported {heavy}"
    assert code in (0, None) if "missing.tif" not in args else code in (2, 3)


def test_version_prints_the_package_version() -> None:
    from geoseg.version import __version__

    done = subprocess.run([sys.executable, "-m", "geoseg.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"geoseg {__version__}"


def test_settings_are_checked_before_the_existing_output(tmp_path) -> None:
    scene = write_tif(tmp_path / "s.tif", np.ones((3, 64, 64), np.float32), descriptions=("b1", "b2", "b3"))
    (tmp_path / "s.mask.tif").write_bytes(b"x")
    code, heavy, out = probe("run", str(scene), "--tile-size", "100", "--model", "csmask-6b-l1c",
                             "--bands", "1,2,3,1,2,3")
    assert code == 2 and "multiple of 32" in out and "already exists" not in out, out
    code, heavy, out = probe("run", str(scene), "--model", "csmask-6b-l1c", "--bands", "1,2,3,1,2,3")
    assert code == 6 and "already exists" in out and heavy == []


def test_json_errors_are_json(tmp_path) -> None:
    from typer.testing import CliRunner

    from geoseg.cli.app import app

    result = CliRunner().invoke(app, ["run", str(tmp_path / "missing.tif"), "--json"])
    assert result.exit_code == 3
    assert json.loads(result.stdout) == {"error": result.stderr.strip().removeprefix("geoseg: error: "),
                                         "exit_code": 3}
    info = CliRunner().invoke(app, ["info", str(tmp_path / "missing.tif"), "--json"])
    assert info.exit_code == 3 and json.loads(info.stdout)["exit_code"] == 3


def test_batch_failure_lines_name_the_path_once_and_warnings_are_shown(tmp_path, model_folder) -> None:
    from typer.testing import CliRunner

    from geoseg.cli.app import app

    write_tif(tmp_path / "one-band.tif", np.ones((1, 64, 64), np.float32))
    write_tif(tmp_path / "dn.tif", np.ones((3, 64, 64), np.float32), descriptions=("b1", "b2", "b3"), crs=None)
    result = CliRunner().invoke(app, ["batch", str(tmp_path / "one-band.tif"), str(tmp_path / "dn.tif"),
                                      "-o", str(tmp_path / "out"), "--model", str(model_folder)])
    failed = next(line for line in result.stderr.splitlines() if "failed" in line)
    assert failed.count("one-band.tif") == 1, failed
    assert "warning: " in result.stderr and "has no CRS" in result.stderr, result.stderr
