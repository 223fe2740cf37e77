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
        for item in sorted(folder.glob("*.json")):  # masks the log does not name (another batch's, a run's)
            mask = item.with_suffix(".tif")
            if mask.is_file() and mask.resolve() not in known and _is_mask_item(item):
                scenes.append(ReportScene(input=_derived_from(item) or str(mask), output=str(mask), status="done"))
        path = write_report(folder, scenes)
    shown = sum(Path(s.output).parent.resolve() == folder.resolve() for s in scenes)
    if as_json:
        print(json.dumps({"report": str(path), "scenes": shown}))
    else:
        print(f"{path}: {shown} scene(s)")


def _is_mask_item(path: Path) -> bool:
    try:
        item = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(item, dict) and item.get("type") == "Feature" and "mask" in item.get("assets", {})


def _derived_from(path: Path) -> str | None:
    item = json.loads(path.read_text())
    return next((str(link["href"]) for link in item.get("links", []) if link.get("rel") == "derived_from"), None)
