"""What training carries from epoch to epoch, and its checkpoint: ``--resume`` picks up where a run stopped.

:class:`TrainingState` is the loop's bookkeeping (epochs done, the best validation mIoU and its weights, epochs
without improvement, the history). A checkpoint holds it with the network's, the optimiser's and the learning-rate
schedule's states, written under a temporary name and renamed into place, so a run killed mid-write leaves the
previous checkpoint whole. Tensors and plain values only: it loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import OutputError


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    val_miou: float
    val_overall: float
    seconds: float
    chips_per_second: float


@dataclass
class TrainingState:
    """The loop's bookkeeping between epochs (see module docstring)."""

    epoch: int = 0  # epochs done
    best_miou: float = -1.0
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights, on the CPU
    history: list[EpochRecord] = field(default_factory=list)

    def scored(self, record: EpochRecord, net: torch.nn.Module) -> bool:
        """Record an epoch; keep the network's weights if its validation mIoU is the best so far (True then)."""
        self.history.append(record)
        self.epoch = record.epoch
        if record.val_miou > self.best_miou or self.best_state is None:
            self.best_miou, self.best_epoch, self.stale = record.val_miou, record.epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            return True
        self.stale += 1
        return False


def save_checkpoint(path: Path, state: TrainingState, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> None:
    """Write the checkpoint at ``path`` through a temporary file (see module docstring)."""
    partial = path.with_suffix(".partial")
    try:
        torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": state.epoch, "best_miou": state.best_miou,
                    "best_epoch": state.best_epoch, "stale": state.stale,
                    # the best weights are the current ones when this epoch was the best: not written twice
                    "best_model": None if state.best_epoch == state.epoch else state.best_state,
                    "history": json.dumps([asdict(h) for h in state.history])}, partial)
        partial.replace(path)
    except (OSError, RuntimeError) as exc:
        # torch.save reports a full disk as RuntimeError('... iostream error'), without the errno.
        partial.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "a write failed"
        raise OutputError(f"{path}: the checkpoint after epoch {state.epoch} could not be written ({reason}; "
                          f"{free / 2**20:.0f} MiB free there); free space there and run again with --resume, "
                          f"which starts from the last checkpoint written") from None


def load_checkpoint(path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> TrainingState:
    """Restore the network, optimiser and schedule from the checkpoint at ``path``; its bookkeeping."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    best = saved["model"] if saved["best_model"] is None else saved["best_model"]  # a copy: net's own are apart
    return TrainingState(int(saved["epoch"]), float(saved["best_miou"]), int(saved["best_epoch"]), int(saved["stale"]),
                         best, [EpochRecord(**r) for r in json.loads(saved["history"])])
