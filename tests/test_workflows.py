"""workflows/: the scheduler examples parse, name real geoseg options and APIs, and set what workers need."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from geoseg.cli.app import app

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _options(command: str) -> set[str]:
    text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
    return set(re.findall(r"--[a-z][a-z0-9-]*", text))


def test_the_shell_examples_use_options_geoseg_has() -> None:
    checked = 0
    for script in (WORKFLOWS / "multi-gpu").glob("*.sh"):
        for line in script.read_text().splitlines():
            line = line.lstrip("# ")
            for command in ("batch", "run"):
                if line.startswith(f"geoseg {command}") or f"exec geoseg {command}" in line:
                    used = set(re.findall(r"--[a-z][a-z0-9-]*", line))
                    assert used <= _options(command), (script.name, used - _options(command))
                    checked += 1
    assert checked >= 2  # the examples' geoseg commands were found: the check above ran


def test_the_slurm_example_imports_what_geoseg_exports() -> None:
    import geoseg.batch
    import geoseg.cluster.scenes
    import geoseg.cluster.workers

    tree = ast.parse((WORKFLOWS / "slurm" / "geoseg_slurm.py").read_text())
    modules = {"geoseg.batch": geoseg.batch, "geoseg.cluster.scenes": geoseg.cluster.scenes,
               "geoseg.cluster.workers": geoseg.cluster.workers}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in modules:
            for alias in node.names:
                assert hasattr(modules[node.module], alias.name), f"{node.module}.{alias.name}"
                imported.add(alias.name)
    assert {"run_jobs", "load_job_file", "DaskScenes"} <= imported  # the batch is one library call there


def test_the_kubernetes_manifests_parse_and_configure_the_workers() -> None:
    values = yaml.safe_load((WORKFLOWS / "kubernetes" / "dask-values.yaml").read_text())
    env = {e["name"]: e["value"] for e in values["worker"]["env"]}
    assert env["OMP_NUM_THREADS"] == "16"
    assert "scene=1" in values["worker"]["extraArgs"]
    cron = yaml.safe_load((WORKFLOWS / "kubernetes" / "geoseg-nightly-cronjob.yaml").read_text())
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["geoseg", "batch"] and set(a for a in args if a.startswith("--")) <= _options("batch")


def test_a_thread_count_in_the_workers_environment_wins_over_dasks(monkeypatch) -> None:
    """What the SLURM and Kubernetes examples rely on: the OS environment's OMP_NUM_THREADS is what dask's
    nanny hands its worker process, not dask's default of 1 (a real nanny and worker, asked in the worker)."""
    import pytest

    distributed = pytest.importorskip("distributed")
    monkeypatch.setitem(os.environ, "OMP_NUM_THREADS", "16")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        seen = client.run(lambda: os.environ.get("OMP_NUM_THREADS"))
    assert list(seen.values()) == ["16"]
