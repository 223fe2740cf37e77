"""Devices: precision per device, and the session that places a network once and keeps its graphs."""

from __future__ import annotations

import pytest
import torch

from geoseg.engine import device
from geoseg.engine.device import DeviceSession
from geoseg.engine.predictor import Predictor
from geoseg.errors import ConfigError


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_precision_on_the_cpu_follows_its_bf16_instructions(monkeypatch, has_bf16) -> None:
    """bf16 where the CPU has bf16 instructions (oneDNN runs it natively), fp32 where it would be emulated."""
    assert isinstance(device.cpu_has_bf16(), bool)
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: has_bf16)
    assert device.resolve_precision("auto", torch.device("cpu")) == ("bf16" if has_bf16 else "fp32")
    assert device.resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_a_placed_network_is_not_moved_again() -> None:
    """Scenes in flight share one network: once placed, a later Predictor leaves its parameters alone."""
    def spied() -> tuple[torch.nn.Module, list]:
        net, moves = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train(), []
        original = net._apply
        net._apply = lambda fn, *a, **k: (moves.append(fn), original(fn, *a, **k))[1]  # what .to() calls
        return net, moves

    net, moves = spied()
    placed = DeviceSession.default().place(net, torch.device("cpu"))
    assert moves and not placed.training and placed[0].weight.is_contiguous(memory_format=torch.channels_last)
    moves.clear()
    Predictor(placed, torch.device("cpu"), "fp32", 2, channels=3, patch=32)
    assert moves == []


def test_a_device_session_keeps_graphs_only_for_what_they_were_captured_for() -> None:
    session, net = DeviceSession(), torch.nn.Linear(2, 2)
    graphs = {(1, 2): ("graph", "in", "out")}
    session.keep_graphs(net, ("cuda:0", "bf16"), graphs)  # type: ignore[arg-type]
    assert session.take_graphs(net, ("cuda:0", "fp32")) == {}  # another precision: captured anew
    session.keep_graphs(net, ("cuda:0", "bf16"), graphs)  # type: ignore[arg-type]
    assert session.take_graphs(net, ("cuda:0", "bf16")) == graphs
    assert session.take_graphs(net, ("cuda:0", "bf16")) == {}  # taken: one run holds them at a time
    assert DeviceSession().take_graphs(net, ("cuda:0", "bf16")) == {}  # sessions share nothing


def test_a_run_alone_in_its_session_may_capture_and_one_beside_others_may_not() -> None:
    session = DeviceSession()
    with session.run_in_flight():
        with session.capturing() as alone:
            assert alone
        with session.run_in_flight(), session.capturing() as alone:
            assert not alone
    with DeviceSession().run_in_flight(), session.run_in_flight(), session.capturing() as alone:
        assert alone  # another session's runs do not count


def test_precision_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="precision 'fp64' is not valid"):
        device.resolve_precision("fp64", torch.device("cpu"))


def test_device_waits_counts_the_waits_by_where_they_were_made_and_puts_the_mode_back(monkeypatch) -> None:
    """torch's sync debug mode warns at each call that waits for the GPU; without a GPU here, its warnings are made
    by hand (the GPU test, tests/test_gpu.py, has the real ones)."""
    import warnings

    modes = ["default"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: modes[-1])
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    with pytest.warns(UserWarning, match="an unrelated warning"), device.device_waits(True) as waits:
        assert modes[-1] == "warn"
        for _ in range(2):
            warnings.warn("called a synchronizing CUDA operation", stacklevel=1)
        warnings.warn("an unrelated warning", stacklevel=1)  # shown as it would have been
    assert modes[-1] == "default"
    assert sum(waits.values()) == 2 and len(waits) == 1
    assert next(iter(waits)).startswith("MainThread: test_device.py:")  # outside geoseg: the warning's own line
    with pytest.warns(UserWarning, match="synchronizing"), device.device_waits(False) as none:
        warnings.warn("called a synchronizing CUDA operation", stacklevel=1)  # left alone when off
    assert not none and modes[-1] == "default"


def test_a_device_session_remembers_the_batch_sizes_a_network_ran_at() -> None:
    session, key = DeviceSession(), ("weights", 6, 512, "bf16", "none", "cuda:0")
    assert session.warm_batches(key) == frozenset()
    session.ran_batches(key, 16)
    session.ran_batches(key, 16)
    session.ran_batches(key, 8)
    assert session.warm_batches(key) == {8, 16}
    assert session.warm_batches((*key[:2], 256, *key[3:])) == frozenset()  # another patch: other shapes
    assert DeviceSession().warm_batches(key) == frozenset()  # a session of its own
