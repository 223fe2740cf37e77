"""The training checkpoint: the best weights written once (not twice when the current epoch is the best), and
restored apart from the network's own tensors, so training on after a resume does not move them."""

from __future__ import annotations

import torch

from geoseg.train.checkpoint import EpochRecord, TrainingState, load_checkpoint, save_checkpoint


def _parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    net = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(net.parameters())
    return net, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1)


def _step(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    net(torch.ones(2, 64)).square().sum().backward()
    optimizer.step()


def _record(epoch: int, miou: float) -> EpochRecord:
    return EpochRecord(epoch, 1.0, miou, 0.5, 1.0, 10.0)


def test_the_best_epoch_s_weights_are_written_once_and_restored_apart(tmp_path) -> None:
    net, optimizer, scheduler = _parts()
    state = TrainingState()
    _step(net, optimizer)
    assert state.scored(_record(1, 0.5), net)
    save_checkpoint(tmp_path / "c.pt", state, net, optimizer, scheduler)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["best_model"] is None  # epoch 1 is the best
    again, opt2, sched2 = _parts()
    restored = load_checkpoint(tmp_path / "c.pt", again, opt2, sched2)
    assert restored.best_epoch == 1 and restored.best_state is not None
    best = {k: v.clone() for k, v in restored.best_state.items()}
    assert all(torch.equal(best[k], v) for k, v in net.state_dict().items())
    _step(again, opt2)  # training on moves the network, not the kept best weights
    assert all(torch.equal(best[k], v) for k, v in restored.best_state.items())
    assert not torch.equal(again.weight, restored.best_state["weight"])


def test_an_earlier_best_epoch_is_kept_beside_the_current_weights(tmp_path) -> None:
    net, optimizer, scheduler = _parts()
    state = TrainingState()
    _step(net, optimizer)
    state.scored(_record(1, 0.5), net)
    best_weight = net.weight.detach().clone()
    _step(net, optimizer)
    assert not state.scored(_record(2, 0.4), net)
    save_checkpoint(tmp_path / "c.pt", state, net, optimizer, scheduler)
    restored = load_checkpoint(tmp_path / "c.pt", *_parts())
    assert (restored.epoch, restored.best_epoch, restored.stale) == (2, 1, 1)
    assert restored.best_state is not None and torch.equal(restored.best_state["weight"], best_weight)
    assert [h.epoch for h in restored.history] == [1, 2]
    assert not list(tmp_path.glob("*.partial"))
