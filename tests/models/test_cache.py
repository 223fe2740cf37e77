"""geoseg's cache on a full disk: weights are written by Python, so a failed write is an OSError (ENOSPC, EFBIG)
that callers tell apart; the built-in weights serve the run all the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

LIMITED = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
           "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n")


def _limited(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LIMITED + code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_a_full_disk_is_an_oserror_and_leaves_no_file(tmp_path) -> None:
    done = _limited("import errno, torch\nfrom pathlib import Path\nfrom geoseg.models.cache import save_weights\n"
                    f"try:\n    save_weights(Path({str(tmp_path / 'w.safetensors')!r}), {{'a': torch.zeros(10**6)}})\n"
                    "except OSError as exc:\n    print(exc.errno == errno.EFBIG)\n")
    assert done.stdout.strip() == "True", done.stderr
    assert not list(tmp_path.iterdir())


def test_the_built_in_weights_serve_the_run_when_the_cache_is_full(tmp_path) -> None:
    pytest.importorskip("ukis_csmask")
    done = _limited("import json\nfrom geoseg.models.builtin import csmask_weights\n"
                    "print(json.dumps(len(csmask_weights('csmask-4b-l2a'))))\n",
                    env={"GEOSEG_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0 and json.loads(done.stdout) > 100, done.stderr
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
