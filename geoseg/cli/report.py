"""``geoseg report FOLDER``: the batch report of a folder of masks (``report.html``), again or for the first time."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from geoseg.cli.errors import user_errors
from geoseg.cli.options import json_option


def report(
    folder: Path = typer.Argument(..., help="A batch's output folder (masks with their STAC Items).",
                                  show_default=False),
    log: Path | None = typer.Option(None, help="The batch's JSON-lines log, for times, warnings and failures "
                                               "[default: FOLDER/geoseg-batch.jsonl where it exists]"),
    as_json: bool = json_option(),
) -> None:
    """Write FOLDER/report.html: each scene's quicklook with its mask and legend, class shares, time, warnings and
    failures, and the totals; one self-contained page."""
    from geoseg.batch.jobs import LOG_NAME
    from geoseg.batch.report import ReportScene, scenes_from_log, write_report
    from geoseg.errors import ConfigError

    with user_errors(as_json):
        if not folder.is_dir():
            raise ConfigError(f"{folder}: is not a folder; give the output folder of a batch (its masks and their "
                              f".json STAC Items)")
        source = log if log is not None else folder / LOG_NAME
        if log is not None and not log.is_file():
            raise ConfigError(f"{log}: no such log; give the batch's {LOG_NAME} or leave --log out")
        scenes = scenes_from_log(source) if source.is_file() else []
        known = {Path(s.output).resolve() for s in scenes}
        for path in sorted(folder.glob("*.json")):  # masks the log does not name (another batch's, a run's)
            mask = path.with_suffix(".tif")
            if mask.is_file() and mask.resolve() not in known and (item := _mask_item(path)) is not None:
                scenes.append(ReportScene(input=_derived_from(item) or str(mask), output=str(mask), status="done"))
        path = write_report(folder, scenes)
    shown = sum(Path(s.output).parent.resolve() == folder.resolve() for s in scenes)
    if as_json:
        print(json.dumps({"report": str(path), "scenes": shown}))
    else:
        print(f"{path}: {shown} scene(s)")


def _mask_item(path: Path) -> dict | None:
    """The mask Item at ``path`` (a STAC Feature with a ``mask`` asset, of a sane size), or None."""
    from geoseg.batch.report import MAX_ITEM_BYTES
    from geoseg.errors import ConfigError
    from geoseg.textfiles import read_text

    try:
        item = json.loads(read_text(path, MAX_ITEM_BYTES, "a mask's STAC Item"))
    except (ConfigError, ValueError):
        return None
    ok = isinstance(item, dict) and item.get("type") == "Feature" and isinstance(item.get("assets"), dict)
    return item if ok and "mask" in item["assets"] else None


def _derived_from(item: dict) -> str | None:
    links = item.get("links") if isinstance(item.get("links"), list) else []
    return next((str(link["href"]) for link in links if isinstance(link, dict) and link.get("rel") == "derived_from"
                 and "href" in link), None)
