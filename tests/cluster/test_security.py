"""Clusters are doors into the machine (dask runs pickled code): the ones geoseg starts listen on loopback
only and speak TLS with a certificate made for them; an external tls:// scheduler takes TLS files."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoseg.cli.app import app
from tests.helpers import smooth_image, stranger_connects, write_tif

runner = CliRunner()
distributed = pytest.importorskip("distributed")


def test_a_local_cluster_listens_on_loopback_over_tls(client) -> None:
    info = client.scheduler_info()
    assert client.scheduler.address.startswith("tls://127.0.0.1:")
    assert info["workers"] and all(addr.startswith("tls://127.0.0.1:") for addr in info["workers"])
    assert all(w["nanny"].startswith("tls://127.0.0.1:") for w in info["workers"].values())
    # dask starts its HTTP server whatever the dashboard setting; without a dashboard it serves nothing.
    port = info["services"]["dashboard"]
    for page in ("/status", "/info/main/workers.html", "/json/identity.json", "/proxy/8786/127.0.0.1/status"):
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=5)
        assert answer.value.code == 404, page


@pytest.mark.parametrize("with_own_certificate", [False, True])
def test_another_process_cannot_connect_to_a_local_cluster(client, with_own_certificate) -> None:
    """A stranger on the same machine, with no certificate or with one of its own, is refused: it never gets
    to run code in the batch's process or its workers."""
    out = stranger_connects(client.scheduler.address, with_own_certificate)
    assert "REFUSED" in out and "CONNECTED" not in out, out


@pytest.mark.parametrize(("args", "message"), [
    (["--scheduler", "tls://127.0.0.1:9"], "give --tls-ca-file, --tls-cert and --tls-key"),
    (["--scheduler", "tls://127.0.0.1:9", "--tls-ca-file", "nowhere.pem", "--tls-cert", "nowhere.pem",
      "--tls-key", "nowhere.pem"], "no such TLS file"),
    (["--scheduler", "tls://127.0.0.1:9", "--tls-ca-file", "ca.pem"], "needs all three"),
    (["--scheduler", "tcp://127.0.0.1:9", "--tls-ca-file", "ca.pem", "--tls-cert", "ca.pem", "--tls-key", "ca.pem"],
     "is not a tls:// address"),
    (["--cpu-workers", "1", "--tls-ca-file", "ca.pem", "--tls-cert", "ca.pem", "--tls-key", "ca.pem"],
     "makes its own certificate"),
    (["--dashboard"], "are for a cluster"),
])
def test_tls_mistakes_are_one_line(tmp_path, monkeypatch, package, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.pem").write_text("not used\n")
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 64, 64)))
    result = runner.invoke(app, ["run", str(scene), "--device", "cpu", "--model", str(package), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and "TypeError" not in result.output


def _pem_files(folder: Path, security) -> tuple[Path, Path, Path]:
    """A temporary Security's in-memory PEMs as the files a user would pass (CA, certificate, key)."""
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    for path, text in zip(paths, (security.tls_ca_file, security.tls_client_cert, security.tls_client_key),
                          strict=True):
        path.write_text(text)
    return paths


def test_run_on_an_external_tls_scheduler_with_tls_files(tmp_path, package) -> None:
    from distributed import LocalCluster
    from distributed.security import Security

    security = Security.temporary()
    ca, cert, key = _pem_files(tmp_path, security)
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 200, 160), seed=4, dtype="uint16"))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
                      security=security, dashboard_address=None, resources={"scene": 1}) as cluster:
        common = ["--model", str(package), "--device", "cpu", "--backend", "torch", "--json", "--quiet"]
        bare = runner.invoke(app, ["run", str(scene), "-o", str(tmp_path / "bare.tif"), "--scheduler",
                                   cluster.scheduler_address, *common])
        assert bare.exit_code == 2 and "give --tls-ca-file" in bare.output
        result = runner.invoke(app, ["run", str(scene), "-o", str(tmp_path / "m.tif"), "--scheduler",
                                     cluster.scheduler_address, "--tls-ca-file", str(ca), "--tls-cert", str(cert),
                                     "--tls-key", str(key), *common])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["device"].startswith("1 dask worker(s)")
    assert (tmp_path / "m.tif").is_file()


def test_a_batch_that_cannot_reach_its_tls_scheduler_says_why_in_its_log(tmp_path, package) -> None:
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 64, 64)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(scene), "-o", str(out), "--model", str(package), "--scheduler",
                                 "tls://127.0.0.1:9"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    events = [json.loads(line) for line in (out / "geoseg-batch.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "batch_failed" and "--tls-ca-file" in events[-1]["error"]
