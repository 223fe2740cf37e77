"""What training carries from epoch to epoch, and its checkpoint: ``--resume`` picks up where a run stopped.

:class:`TrainingState` is the loop's bookkeeping (epochs done, the best validation mIoU and its weights, epochs
without improvement, the history). A checkpoint holds it with the network's, the optimiser's and the learning-rate
schedule's states, written under a temporary name and renamed into place, so a run killed mid-write leaves the
previous checkpoint whole. Tensors and plain values only: it loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


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
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": state.epoch, "best_miou": state.best_miou, "best_epoch": state.best_epoch,
                "stale": state.stale, "best_model": state.best_state,
                "history": json.dumps([asdict(h) for h in state.history])}, partial)
    partial.replace(path)


def load_checkpoint(path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> TrainingState:
    """Restore the network, optimiser and schedule from the checkpoint at ``path``; its bookkeeping."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return TrainingState(int(saved["epoch"]), float(saved["best_miou"]), int(saved["best_epoch"]), int(saved["stale"]),
                         saved["best_model"], [EpochRecord(**r) for r in json.loads(saved["history"])])
