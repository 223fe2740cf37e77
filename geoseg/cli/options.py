"""Parsers for option values the CLI shares, turning bad strings into clear messages."""

from __future__ import annotations

import typer

from geoseg.blend import BLEND_WINDOWS
from geoseg.inference import PRECISIONS


def parse_bands(value: str | None) -> tuple[int | str, ...] | None:
    """``"4,3,2"`` or ``"red,green,blue"`` -> a tuple of indexes / names."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if not all(parts):
        raise typer.BadParameter(f"{value!r} has an empty entry; list bands like 3,2,1,4 or red,green,blue,nir")
    return tuple(int(p) if p.isdigit() else p for p in parts)


def check_choice(value: str, choices: tuple[str, ...] | list[str], what: str) -> str:
    if value not in choices:
        raise typer.BadParameter(f"{what} {value!r} is not one of {', '.join(choices)}")
    return value


def blend_option(value: str) -> str:
    return check_choice(value, list(BLEND_WINDOWS), "blend window")


def precision_option(value: str) -> str:
    return check_choice(value, PRECISIONS, "precision")
