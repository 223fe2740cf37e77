"""A training run's settings, checked when made: imported without torch, so that ``geoseg train``'s usage
errors (a chip size that is not a multiple of 32) answer at once instead of after torch has loaded."""

from __future__ import annotations

from dataclasses import dataclass

from geoseg.config import TILE_MULTIPLE
from geoseg.errors import ConfigError
from geoseg.models.builtin import BUILTIN_ENCODER, CSMASK_VARIANTS

#: The encoder trained when neither ``encoder`` nor a built-in ``init`` names one.
DEFAULT_ENCODER = "resnet34"


@dataclass(frozen=True)
class TrainConfig:
    architecture: str = "Unet"
    encoder: str | None = None  # default: the built-in init's encoder, else DEFAULT_ENCODER
    init: str = "none"
    epochs: int = 20
    batch_size: int = 16
    chip_size: int = 256
    chips_per_epoch: int | None = None  # default: twice the training area in chips
    learning_rate: float = 1e-3
    val_share: float = 0.2
    patience: int = 5
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 elsewhere
    workers: int | None = None  # DataLoader processes; default: CPU cores - 1, none on a 2-core machine
    bands: tuple[str, ...] | None = None  # the scene bands to train on, by name or index (default: all)
    sensor: str | None = None
    scale: float | None = None
    seed: int = 0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.encoder is None:  # --init csmask-6b-l1c implies its encoder
            object.__setattr__(self, "encoder", BUILTIN_ENCODER if self.init in CSMASK_VARIANTS else DEFAULT_ENCODER)
        if self.chip_size < TILE_MULTIPLE or self.chip_size % TILE_MULTIPLE:
            raise ConfigError(f"--chip-size {self.chip_size}: must be a positive multiple of {TILE_MULTIPLE} (the "
                              f"U-Net halves it 5 times)")
