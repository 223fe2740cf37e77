"""Shared test helpers: small real GeoTIFFs, seeded images, and a tiny deterministic stand-in model.

Imported by tests as ``from tests.helpers import ...``; the fixtures that use them are in conftest.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.models import ClassInfo, ModelCard

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
S2_SCENE = SHARED / "sentinel2-t33uuu" / "S2A_T33UUU_20170216_L1C_B02-B03-B04-B08-B11-B12_10m.tif"
UTM33 = CRS.from_epsg(32633)


def write_tif(path: Path, data: np.ndarray, *, res: float = 10.0, crs: CRS | None = UTM33,
              nodata: float | None = None, descriptions: Sequence[str | None] | None = None,
              block: int = 64, **extra: object) -> Path:
    """Write ``(band, row, col)`` ``data`` as a tiled, deflated GeoTIFF on a UTM grid."""
    bands, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype=data.dtype, crs=crs,
                   transform=Affine(res, 0, 330000, 0, -res, 5822040), nodata=nodata, tiled=True,
                   blockxsize=block, blockysize=block, compress="deflate", **extra)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or ()):
            if d:
                ds.set_band_description(i + 1, d)
    return path


class TinyNet(torch.nn.Module):
    """A deterministic stand-in for a U-Net: per-pixel band mixing plus 5x5 local context.

    Built only from elementwise ops and average pooling, so a patch's output does not depend on
    which other patches share its batch (no BLAS blocking that varies with the batch size).
    """

    def __init__(self, in_channels: int = 3, classes: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.nn.Parameter(torch.randn(classes, in_channels, generator=g), requires_grad=False)
        self.ctx = torch.nn.Parameter(torch.randn(classes, in_channels, generator=g), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
        out = []
        for k in range(self.mix.shape[0]):
            acc = torch.zeros_like(x[:, 0])
            for c in range(x.shape[1]):
                acc = acc + self.mix[k, c] * x[:, c] + self.ctx[k, c] * local[:, c]
            out.append(acc)
        return torch.stack(out, dim=1) * 3.0


class SkewedNet(TinyNet):
    """:class:`TinyNet` plus ramps across the patch's rows and columns (other for each class): not symmetric
    under flips or quarter turns, so test-time augmentation changes its probabilities."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        rows = torch.linspace(-1.0, 1.0, x.shape[-2], dtype=x.dtype)[:, None]
        cols = torch.linspace(-1.0, 1.0, x.shape[-1], dtype=x.dtype)[None, :]
        ramps = torch.stack([(k + 1) * 0.9 * rows - (k - 1) * 1.3 * cols for k in range(out.shape[1])])
        return out + ramps


def tiny_card(bands: int = 3, tile: int = 64, overlap: int = 16, resolution_m: float | None = None) -> ModelCard:
    return ModelCard(
        name="tiny", architecture="Unet", encoder="resnet18",
        bands=tuple(f"b{i + 1}" for i in range(bands)), mean=(0.0,) * bands, std=(1.0,) * bands,
        classes=(ClassInfo(0, "a", (255, 0, 0)), ClassInfo(1, "b", (0, 255, 0)), ClassInfo(2, "c", (0, 0, 255))),
        tile_size=tile, overlap=overlap, resolution_m=resolution_m,
    )


def smooth_image(shape: tuple[int, int, int], seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """Random fields with some spatial structure, so the stand-in model's classes form regions."""
    rng = np.random.default_rng(seed)
    bands, rows, cols = shape
    coarse = rng.normal(size=(bands, rows // 8 + 2, cols // 8 + 2))
    field = coarse.repeat(8, axis=1).repeat(8, axis=2)[:, :rows, :cols]
    field = field + 0.3 * rng.normal(size=shape)
    if np.dtype(dtype).kind == "f":
        return field.astype(dtype)
    return np.clip(2000 + 800 * field, 1, 60000).astype(dtype)


@contextmanager
def module_package(tmp_path_factory: Any, folder: str, name: str) -> Iterator[Path]:
    """:func:`varied_unet_package` at ``FOLDER/NAME`` for a module-scoped fixture, removed when the module's tests
    are done (about 110 MB each: kept to the end of the run, they added up)."""
    base = tmp_path_factory.mktemp(folder)
    try:
        yield varied_unet_package(base / name)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def varied_unet_package(folder: Path, tile: int = 64, overlap: int = 16) -> Path:
    """A real smp U-Net (resnet18, 3 bands, 3 classes, seeded) saved as a geoseg model package.

    Its batch-norm statistics are measured on a smooth image (a forward pass in training mode), so its
    classes vary across a scene: a randomly initialised network in eval mode calls nearly every pixel one
    class, which would make equality tests weak. Loaded by name in any process (dask workers)."""
    import segmentation_models_pytorch as smp

    from geoseg.models.importing import import_model, parse_classes

    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average of the batches seen
    image = torch.from_numpy((smooth_image((3, 256, 256), seed=5, dtype="uint16").astype(np.float32) - 2000) / 800)
    net.train()
    with torch.no_grad():
        net(torch.stack([image[:, :128, :128], image[:, 128:, 128:], image[:, :128, 128:]]))
    net.eval()
    net.save_pretrained(folder.parent / f"{folder.name}-smp")
    import_model(folder.parent / f"{folder.name}-smp", folder, bands=("b1", "b2", "b3"),
                 classes=parse_classes("water,forest,field"), mean=(2000.0,) * 3, std=(800.0,) * 3,
                 scale=1.0, resolution_m=None, tile_size=tile, overlap=overlap)
    return folder


#: STAC extension schemas kept offline for validation (tests/data/stac).
STAC_SCHEMAS = Path(__file__).resolve().parent / "data" / "stac"
#: The nodata value of masks in these helpers (geoseg's).
NODATA = 255


def write_tiled(path: Path, data: np.ndarray, *, tile: int = 32, **profile: object) -> Path:
    """``(band, row, col)`` ``data`` as a tiled deflate GeoTIFF with ``tile``-px tiles and any other creation option."""
    bands, height, width = data.shape
    base = dict(driver="GTiff", width=width, height=height, count=bands, dtype=data.dtype, crs=UTM33,
                transform=Affine(10, 0, 330000, 0, -10, 5822040), tiled=True, blockxsize=tile, blockysize=tile,
                compress="deflate")
    with rasterio.open(path, "w", **{**base, **profile}) as ds:
        ds.write(data)
    return path


def full_range_values(dtype: str, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """The full range of ``dtype``, with smooth runs (what predictors are for) and jumps (wrap-around)."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        data = smooth_image(shape, seed).astype(dtype) * 1e3
        data[:, ::7, ::5] = rng.normal(size=data[:, ::7, ::5].shape) * 1e30
        data[0, 3, 4] = -0.0
        return data
    info = np.iinfo(dtype)
    smooth = smooth_image(shape, seed)
    span = (smooth.astype(np.float64) - smooth.min()) / np.ptp(smooth) * (float(info.max) - float(info.min))
    data = np.clip(info.min + span, info.min, info.max).astype(dtype)
    data[:, ::5, ::3] = rng.integers(info.min, int(info.max) + 1, size=data[:, ::5, ::3].shape, dtype=dtype)
    return data


def decoded_strip(path: Path, bands: tuple[int, ...], mode: str = "gpu", chunk_cols: int = 64,
                  device: torch.device | None = None, inflater=None, streams: int = 2):
    """The whole scene decoded into one strip by a TileDecoder (on the CPU with the host inflater
    unless told otherwise: an inflater, or a function of the decoder that makes one), and by the CPU readers."""
    from geoseg.engine.inflate import HostInflater
    from geoseg.engine.input_rows import InputRows
    from geoseg.engine.plan import Box, plan_layout
    from geoseg.engine.staging import StagingPool
    from geoseg.engine.tile_decode import ChunkQueue, TileDecoder
    from geoseg.io.scene import WindowReader, open_scene
    from geoseg.io.tiles import TileIndex, tile_index

    device = device or torch.device("cpu")
    scene = open_scene(path)
    index = tile_index(scene)
    assert isinstance(index, TileIndex), index
    card = tiny_card(bands=len(bands))
    layout = plan_layout(scene.height, scene.width, 1, 64, 16)
    th = scene.block_shape[0]
    chunks = [Box(r, min(r + 2 * th, scene.height), c, min(c + chunk_cols, scene.width))
              for r in range(0, scene.height, 2 * th) for c in range(0, scene.width, chunk_cols)]
    nodata = scene.nodata if scene.mask_kind == "nodata" else None
    decoder = TileDecoder(index, bands, device, nodata, mode, batch_tiles=4, streams=streams)
    decoder._inflater = inflater(decoder) if callable(inflater) else inflater or HostInflater(index.codec)
    inputs = InputRows(layout, card, device, scene.dtype)
    strip = inputs.open_strip(0, scene.height)
    decoder.drain(strip, ChunkQueue(chunks), inputs.copy_stream)
    decoder.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    reader = WindowReader(scene, bands)
    reference = inputs.open_strip(0, scene.height)
    pool = StagingPool(inputs.staged_bytes(scene.height * scene.width), 1, False)
    inputs.load(reference, Box(0, scene.height, 0, scene.width), reader.read_into, pool)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return strip, reference, decoder


def write_mask(path: Path, labels: np.ndarray, *, crs: str = "EPSG:32633", res: float = 10.0,
               origin: tuple[float, float] = (330000.0, 5822040.0)) -> Path:
    """A uint8 class mask (classes water, forest, field; nodata 255) as a GeoTIFF on a UTM grid."""
    height, width = labels.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs=crs,
                       transform=Affine(res, 0, origin[0], 0, -res, origin[1]), nodata=NODATA) as ds:
        ds.write(labels, 1)
        ds.update_tags(CLASSES='["water", "forest", "field"]')
    return path


def blobby(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Classes in blobs of several sizes (many cross any window edge), speckle, and a nodata corner."""
    rng = np.random.default_rng(seed)
    height, width = shape
    labels = np.zeros(shape, np.uint8)
    for cell in (37, 11, 3):
        coarse = rng.integers(0, 3, (height // cell + 1, width // cell + 1))
        layer = coarse.repeat(cell, 0).repeat(cell, 1)[:height, :width]
        labels = np.where(rng.random(shape) < 0.5, layer, labels).astype(np.uint8) if cell == 3 else \
            np.where(layer > 0, layer, labels).astype(np.uint8)
    labels[:17, :23] = NODATA
    return labels


def small_scenes(folder: Path, n: int, size: int = 60) -> list[Path]:
    """``n`` small 3-band scenes ``s00.tif``... in ``folder``, each seeded differently."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_tif(folder / f"s{i:02d}.tif", smooth_image((3, size, size + 7), seed=i),
                      descriptions=("b1", "b2", "b3")) for i in range(n)]


def run_batch_cli(*args: str) -> tuple[int, dict]:
    """``geoseg batch ARGS --quiet`` through typer's runner: its exit code and summary (when ``-o`` is given)."""
    result = CliRunner().invoke(app, ["batch", *args, "--quiet"])
    out = Path(args[args.index("-o") + 1]) if "-o" in args else None
    summary = json.loads((out / "geoseg-batch-summary.json").read_text()) if out else {}
    return result.exit_code, summary


def validate_stac(document: dict) -> None:
    """Validate against the STAC core schema (pystac's copy) and every declared extension (tests/data/stac)."""
    import jsonschema
    import pystac.validation.jsonschemas as core
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    root = Path(core.__file__).parent
    resources = []
    for path in root.rglob("*.json"):
        schema = json.loads(path.read_text())
        # Registered by folder + file name: pystac's copy of common.json misspells its own $id.
        uri = f"{schema['$id'].rsplit('/', 1)[0]}/{path.name}"
        resources.append((uri, Resource.from_contents(schema, default_specification=DRAFT7)))
    for path in STAC_SCHEMAS.glob("*.json"):
        # Registered by file name (NAME-vX.Y.Z.json): processing v1.1.0's own $id still says v1.0.0.
        name, version = path.stem.rsplit("-", 1)
        schema = json.loads(path.read_text())
        resource = Resource.from_contents(schema, default_specification=DRAFT7)
        resources.append((f"https://stac-extensions.github.io/{name}/{version}/schema.json", resource))
        if path.stem == "raster-v1.0.0":  # what MLM v1.5.0 refers to in raster v1.1.0 (tests/data/stac/README.md)
            resources.append(("https://stac-extensions.github.io/raster/v1.1.0/schema.json", resource))
    registry = Registry().with_resources(resources)
    kind = "item" if document["type"] == "Feature" else "collection"
    core_uri = f"https://schemas.stacspec.org/v1.1.0/{kind}-spec/json-schema/{kind}.json"
    jsonschema.Draft7Validator({"$ref": core_uri}, registry=registry).validate(document)
    for uri in document["stac_extensions"]:
        schema = registry.contents(uri)
        jsonschema.Draft7Validator(schema, registry=registry).validate(document)


def stranger_connects(address: str, own_certificate: bool) -> str:
    """What a separate process prints trying to run code on the dask scheduler at ``address`` with no TLS
    certificate or with one of its own: ``REFUSED ...`` or ``CONNECTED ...``."""
    security = "Security.temporary()" if own_certificate else "None"
    probe = (f"from distributed import Client\nfrom distributed.security import Security\n"
             f"try:\n    c = Client({address!r}, timeout=5, security={security})\n"
             f"    print('CONNECTED', c.run_on_scheduler(lambda: 'ran code'))\n"
             f"except Exception as exc:\n    print('REFUSED', type(exc).__name__)\n")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout


def geoseg_process(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300,
          file_limit: int | None = None) -> tuple[int, str, int]:
    """``geoseg ARGS`` in a child process: its exit code, stderr and peak resident memory in bytes.

    The peak is the child's own ``VmHWM``, read as it exits (``ru_maxrss`` of a child counts the parent's
    memory at the fork). ``file_limit`` caps the size of every file it writes (RLIMIT_FSIZE: a write past it
    fails with EFBIG, as on a full disk)."""
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        code = ("import atexit, sys\n"
                "_path = sys.argv.pop()\n"
                "def _peak():\n"
                "    with open('/proc/self/status') as s, open(_path, 'w') as out:\n"
                "        out.write(next(line for line in s if line.startswith('VmHWM')).split()[1])\n"
                "atexit.register(_peak)\n")
        if file_limit is not None:
            code += (f"import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                     f"resource.setrlimit(resource.RLIMIT_FSIZE, ({file_limit}, {file_limit}))\n")
        code += "from geoseg.cli.app import main; sys.argv[0] = 'geoseg'; main()\n"
        try:
            done = subprocess.run([sys.executable, "-c", code, *args, peak.name], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, timeout=timeout)
        except subprocess.TimeoutExpired:
            return -9, f"timed out after {timeout} s", 0
        text = Path(peak.name).read_text().strip()
    return done.returncode, done.stderr.decode(errors="replace"), int(text) * 1024 if text else 0


#: :class:`RangeServer` faults besides HTTP statuses: a connection dropped mid-body, an answer 30 s late.
RESET, SLOW = -1, -2


class RangeServer:
    """An HTTP server on 127.0.0.1 serving ``folder`` with single-range GET requests, as object storage serves
    COGs, in a process of its own (GDAL holds the GIL while it waits on curl: a server thread of the test's
    process would answer only when curl gives up). ``faults`` maps a file name to the statuses its next
    requests get (``[503]``: one 503, then the file); :data:`RESET` sends the headers and half the body, then
    drops the connection; :data:`SLOW` answers after 30 s. :attr:`sent` is the body bytes served so far,
    :attr:`requests` the requests answered, :attr:`misses` those for files it does not have (404)."""

    def __init__(self, folder: Path, faults: dict[str, list[int]] | None = None):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._sent = context.Array("q", 3)  # body bytes, requests, 404s
        self._port = context.Value("i", 0)
        self._process = context.Process(target=_serve_range, args=(str(folder), faults or {}, self._sent, self._port),
                                        daemon=True)

    def __enter__(self) -> RangeServer:
        import time

        self._process.start()
        deadline = time.monotonic() + 30
        while not self._port.value and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(10)

    @property
    def sent(self) -> int:
        return int(self._sent[0])

    @property
    def requests(self) -> int:
        return int(self._sent[1])

    @property
    def misses(self) -> int:
        return int(self._sent[2])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._port.value}/{name}"


def _serve_range(folder: str, faults: dict[str, list[int]], sent: Any, port: Any) -> None:
    """:class:`RangeServer`'s process."""
    import http.server
    import threading

    root, queued, lock = Path(folder), {k: list(v) for k, v in faults.items()}, threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as object storage: curl reuses its connections

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _file(self) -> Path | None:
            with sent.get_lock():
                sent[1] += 1
            name = self.path.lstrip("/").split("?")[0]
            with lock:
                status = queued[name].pop(0) if queued.get(name) else None
            if status == SLOW:
                import time

                time.sleep(30)
                status = None
            self.reset = status == RESET
            if status == RESET:
                status = None
            if status is not None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            path = root / name
            if not name or not path.is_file():
                with sent.get_lock():
                    sent[2] += 1
                self.send_error(404)
                return None
            return path

        def do_HEAD(self) -> None:
            path = self._file()
            if path is not None:
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

        def do_GET(self) -> None:
            path = self._file()
            if path is None:
                return
            total = path.stat().st_size
            wanted = self.headers.get("Range")
            with path.open("rb") as f:  # only the range is read: benchmark files are gigabytes
                if wanted and wanted.startswith("bytes=") and "," not in wanted:
                    start, _, end = wanted[6:].partition("-")
                    first, last = int(start), min(int(end) if end else total - 1, total - 1)
                    f.seek(first)
                    body = f.read(last + 1 - first)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{last}/{total}")
                else:
                    body = f.read()
                    self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if self.reset:  # half the body, then the connection drops
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                import socket

                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)
            with sent.get_lock():
                sent[0] += len(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port.value = httpd.server_address[1]
    httpd.serve_forever()
