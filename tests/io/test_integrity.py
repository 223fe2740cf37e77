"""Publishing small text files whole or not at all."""

from __future__ import annotations

import pytest

from geoseg.errors import OutputError
from geoseg.io.integrity import publish_text


def test_a_text_that_cannot_be_written_says_why_in_one_line_and_leaves_nothing(tmp_path) -> None:
    """A parent that is a file: the error names the file, the system's reason and the fix, and no temporary file
    is left (the reason once came out as "(None)": the write's own error was wrapped a second time)."""
    parent = tmp_path / "file"
    parent.write_text("")
    with pytest.raises(OutputError) as caught:
        publish_text(parent / "table.csv", "a,b\n", fix="choose a writable path with -o")
    message = str(caught.value)
    assert message == f"{parent / 'table.csv'}: cannot be written (Not a directory); choose a writable path with -o"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_text_is_published_whole(tmp_path) -> None:
    path = tmp_path / "table.csv"
    publish_text(path, "a,b\n")
    assert path.read_text() == "a,b\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
