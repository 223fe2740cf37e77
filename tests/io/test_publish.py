"""geoseg.io.publish: a product's files under temporary names, published together with the mask last."""

from __future__ import annotations

import os

import pytest

from geoseg.io import publish
from geoseg.io.publish import PARTIAL_MARK, Staging, parse_process_tag, process_tag


def test_staged_files_are_published_with_the_mask_last_and_no_temporary_left(tmp_path, monkeypatch) -> None:
    mask, legend, stats = tmp_path / "m.tif", tmp_path / "m.qml", tmp_path / "m.json"
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(publish.os, "replace", lambda a, b: (renamed.append(b), real_replace(a, b)))
    with Staging() as staging:
        for final in (mask, legend, stats):  # the mask staged first, published last
            temporary = staging.stage(final)
            assert PARTIAL_MARK in temporary.name and temporary.parent == tmp_path and not final.exists()
            temporary.write_text(final.suffix)
        staging.publish(last=mask)
    assert renamed == [legend, stats, mask]
    assert [p.read_text() for p in (mask, legend, stats)] == [".tif", ".qml", ".json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.qml", "m.tif"]


def test_an_error_before_publishing_leaves_nothing_at_the_final_paths(tmp_path) -> None:
    mask = tmp_path / "m.tif"
    with pytest.raises(RuntimeError), Staging() as staging:
        staging.stage(mask).write_bytes(b"half")
        staging.scratch(mask, "overviews").write_bytes(b"scratch")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_process_tags_round_trip() -> None:
    pid, host = parse_process_tag(process_tag())
    assert pid == os.getpid() and host and "~" not in host
    assert parse_process_tag("123") == (123, None)  # names written before hosts were tagged
    assert parse_process_tag("abc~host") is None
