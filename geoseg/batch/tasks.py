"""What a batch is made of and what it gives back: its scenes (:class:`Task`, planned from jobs by :func:`plan_tasks`),
each scene's outcome (:class:`SceneResult`) and the batch's (:class:`BatchSummary`).

A job's inputs expand to scenes (:func:`geoseg.batch.jobs.expand_inputs`); a STAC ItemCollection or a static catalog
expands further to its Items. Two scenes writing the same output is a configuration error, found before anything
runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geoseg.batch.jobs import Job, ListProblem, expand_inputs
from geoseg.config import RunConfig
from geoseg.errors import ConfigError
from geoseg.io.items import catalog_items, is_item_collection, is_stac_catalog, split_collection


@dataclass(frozen=True)
class Task:
    """One scene of a batch."""

    job: str
    input: Path
    output: Path
    config: RunConfig
    #: Why this input cannot run at all (a list file's line that names no file): it fails with this message.
    problem: str | None = None


@dataclass
class SceneResult:
    job: str
    input: str
    output: str
    status: str  # done | skipped | failed | cancelled
    seconds: float = 0.0
    megapixels_per_second: float | None = None
    error: str | None = None
    error_kind: str | None = None  # the error class: SceneError, BandError, ... (exit code in `geoseg run`)
    warnings: list[str] = field(default_factory=list)
    reason: str | None = None  # why a scene was skipped: done earlier, or claimed by another batch


@dataclass
class BatchSummary:
    started: str
    finished: str
    seconds: float
    counts: dict[str, int]
    exit_code: int
    notes: list[str]
    scenes: list[SceneResult]
    catalogs: list[str] = field(default_factory=list)  # each output folder's STAC Collection and VRT mosaic
    reports: list[str] = field(default_factory=list)  # each output folder's report.html (geoseg.batch.report)
    files: dict[str, str] = field(default_factory=dict)  # the batch's log and summary (geoseg.batch.session)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_tasks(jobs: list[Job]) -> tuple[list[Task], list[str]]:
    """Every scene of every job with its output path; notes for inputs that matched nothing.

    Two scenes writing the same output is a configuration error, found before anything runs.
    """
    tasks, notes = [], []
    for job in jobs:
        scenes, empty = expand_inputs(job.inputs)
        notes += [f"job {job.name!r}: {n}" for n in empty]
        scenes = [item for scene in scenes for item in _items_of(scene, job)]
        for scene in scenes:
            if isinstance(scene, ListProblem):  # fails as a scene, named by its list and line only
                folder = job.output_dir if job.output_dir is not None else scene.listing.parent
                tasks.append(Task(job.name, Path(str(scene)), folder / f".{scene.listing.name}.{scene.line}",
                                  job.config, problem=scene.message))
            else:
                tasks.append(Task(job.name, scene, job.output_for(scene), job.config))
    seen: dict[Path, Task] = {}
    for task in tasks:
        key = task.output.resolve()
        if key in seen:
            raise ConfigError(f"{seen[key].input} and {task.input} would both be written to {task.output}; "
                              f"use {{parent}} or {{job}} in the name template")
        seen[key] = task
    return tasks, notes


def _items_of(scene: Path | ListProblem, job: Job) -> list[Path | ListProblem]:
    """``scene``; the Items of a STAC ItemCollection, each a file in ``.geoseg-items/`` of the output folder; or the
    Item files a static catalog links to."""
    if isinstance(scene, ListProblem):
        return [scene]
    if is_stac_catalog(scene):
        return list(catalog_items(scene))
    if not is_item_collection(scene):
        return [scene]
    return list(split_collection(scene, (job.output_dir or scene.parent) / ITEMS_FOLDER))


#: Where a batch writes the Items of an ItemCollection it was given, in the output folder.
ITEMS_FOLDER = ".geoseg-items"
