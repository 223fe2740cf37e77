"""``RunSummary``: what a run did, apart from the code that runs it, so that a process that only shows a
summary (the command line of a run on the geoseg service) need not import torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for the end-of-run screen and ``--json``."""

    input: str
    output: str
    model: str
    device: str
    backend: str  # torch, onnxruntime or openvino (--backend)
    precision: str
    batch_size: int  # patches per model call, as chosen (auto) and after any out-of-memory back-off
    width: int
    height: int
    bands: tuple[int, ...]
    band_match: str
    factor: int
    tile_size: int
    overlap: int
    blend: str
    seconds: float
    megapixels_per_second: float
    class_shares: dict[str, float]
    nodata_share: float
    peak_device_memory_gib: float | None = None  # CUDA only: the most the run held on the GPU
    model_seconds: float = 0.0  # of ``seconds``, the time spent in the network (device time on CUDA)
    patches: int = 0  # patches the network saw (a padded last batch included)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # where the device thread's time went
    decode: str = "cpu"  # who decoded the scene's tiles: cpu (GDAL's reader threads), gpu or hybrid (nvCOMP)
    output_format: str = "cog"
    finish_seconds: float = 0.0  # of ``seconds``, turning the written mask into its format (COG: overviews)
    class_stats: list[dict] = field(default_factory=list)  # per class: value, name, pixels, area_ha, share
    files: dict[str, str] = field(default_factory=dict)  # mask, style, stac, legend, probabilities
    vector: dict | None = None  # the polygon layer, when one was asked for
    warnings: list[str] = field(default_factory=list)
    pixel_size_m: float | None = None  # the scene's ground pixel size (None without a CRS)
    #: Of the valid pixels, the share where overlapping patches chose different classes: how much the blending
    #: had to settle (None where the run was split across workers, which blend regions apart).
    seam_share: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunSummary:
        """The inverse of :meth:`to_dict`, for a summary that came as JSON (the geoseg service's door)."""
        return cls(**{**data, "bands": tuple(data["bands"])})
