"""Batch jobs: which scenes, where their masks go, and with which settings.

A job comes from the command line (``geoseg batch INPUT... -o DIR``) or from a YAML job file::

    defaults:                 # optional; merged into every job below
      output_dir: /data/masks
      device: cuda
    jobs:
      - name: sentinel2-nightly
        inputs: ["/data/incoming/S2*.tif", /data/extra/, "@/data/lists/today.txt"]
        name_template: "{stem}.cloudmask.tif"
        model: auto
        batch_size: 16

Inputs are files, globs, directories (their rasters, not recursing) or ``@list.txt`` files of
paths (one per line, ``#`` comments). Folders and globs leave out what geoseg wrote itself (masks
and probabilities carry its record tag), so a mask written beside its scene is never a scene.

Job settings are those of ``geoseg run``, by their
:class:`geoseg.config.RunConfig` field names and value types; a key geoseg does not know is an
error that names it and the closest known key.

Job files, lists and templates may come from anyone, so they are bounded before they are used: a job
file is at most :data:`MAX_JOB_FILE_BYTES` and its YAML aliases may not expand it beyond
:data:`geoseg.textfiles.MAX_YAML_NODES` nodes (a "billion laughs" file is refused, not expanded); a list file's lines
are never echoed, only "line N: not a path"; a name template's widths are bounded and its names stay
inside the output folder.
"""

from __future__ import annotations

import difflib
import glob
import re
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from geoseg.config import SETTINGS, RunConfig, value_type
from geoseg.errors import ConfigError
from geoseg.io.outputs import OTHER_FORMATS, looks_remote
from geoseg.textfiles import load_yaml, read_text

#: Raster file endings taken from a directory.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")
#: Fields a name template may use.
TEMPLATE_FIELDS = ("stem", "name", "parent", "job")
DEFAULT_TEMPLATE = "{stem}.mask.tif"
#: A batch's log and summary, by default in the first job's output folder (:mod:`geoseg.batch.session`).
LOG_NAME, SUMMARY_NAME = "geoseg-batch.jsonl", "geoseg-batch-summary.json"
#: Bounds on what a job file, a list file and a name template may make (module docstring).
MAX_JOB_FILE_BYTES = 4 * 2**20
MAX_LIST_FILE_BYTES = 64 * 2**20
MAX_NAME_BYTES = 255

_JOB_KEYS = ("name", "inputs", "output_dir", "name_template")
KNOWN_KEYS = (*_JOB_KEYS, *SETTINGS)


@dataclass(frozen=True)
class Job:
    """Scenes to segment, where their masks go, and how."""

    name: str
    inputs: tuple[str, ...]
    output_dir: Path | None  # None: each mask beside its scene (as ``geoseg run`` writes)
    name_template: str = DEFAULT_TEMPLATE
    config: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        check_template(self.name_template, f"job {self.name!r}")
        if self.output_dir is not None and looks_remote(self.output_dir):
            raise ConfigError(f"job {self.name!r}: output folder {self.output_dir} is a URL or GDAL virtual path; "
                              f"masks are written to a local folder: write them there and copy them with your "
                              f"storage's tool (aws s3 cp, gsutil cp, rclone)")

    def output_for(self, scene: Path) -> Path:
        """The mask of ``scene``: the template filled in, inside :attr:`output_dir` whatever the fields hold."""
        values = {"stem": scene.stem, "name": scene.name, "parent": scene.parent.name, "job": self.name}
        name = self.name_template.format(**values)
        folder = self.output_dir if self.output_dir is not None else scene.parent
        out = folder / name
        if any(len(part.encode()) > MAX_NAME_BYTES for part in Path(name).parts):
            raise ConfigError(f"job {self.name!r}: name template {self.name_template!r} makes a file name longer than "
                              f"{MAX_NAME_BYTES} bytes for {scene.name}; use a shorter template")
        if not out.resolve().is_relative_to(folder.resolve()) or out.resolve() == folder.resolve():
            raise ConfigError(f"job {self.name!r}: name template {self.name_template!r} puts the mask of {scene.name} "
                              f"outside the output folder {folder}; masks stay inside it")
        return out


def check_template(template: str, where: str) -> None:
    """A template of known fields, with bounded widths, that names a file inside the output folder."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: name template {template!r} is not valid ({exc}); "
                          f"e.g. {DEFAULT_TEMPLATE!r}") from None
    used = [f for _, f, _, _ in parsed if f is not None]
    unknown = [f for f in used if f not in TEMPLATE_FIELDS]
    if unknown or not used:
        raise ConfigError(f"{where}: name template {template!r} must use fields from {{{'}, {'.join(TEMPLATE_FIELDS)}}}"
                          f" and no others (got {unknown or 'none'}); e.g. {DEFAULT_TEMPLATE!r}")
    widths = [int(n) for _, _, spec, _ in parsed for n in re.findall(r"\d+", spec or "")]
    if any(w > MAX_NAME_BYTES for w in widths) or any(conv for _, _, _, conv in parsed):
        raise ConfigError(f"{where}: name template {template!r} has a format width over {MAX_NAME_BYTES} or a "
                          f"conversion (!r, !s); use plain fields like {DEFAULT_TEMPLATE!r}")
    if Path(template).is_absolute() or ".." in Path(template).parts or template.startswith("~"):
        raise ConfigError(f"{where}: name template {template!r} must name a file inside the output folder (no "
                          f"absolute path, no '..'); set the folder with -o or output_dir")
    if Path(template).suffix.lower() in OTHER_FORMATS:
        raise ConfigError(f"{where}: name template {template!r} names masks {Path(template).suffix!r}, but a mask is a "
                          f"GeoTIFF; end it in .tif, e.g. {DEFAULT_TEMPLATE!r}")


def load_job_file(path: Path) -> list[Job]:
    """The jobs of a YAML job file (see module docstring); :class:`ConfigError` names any mistake."""
    try:
        data = load_yaml(read_text(path, MAX_JOB_FILE_BYTES, "job file"), path, "job file")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; check indentation and quoting") from None
    if isinstance(data, dict) and "jobs" in data:
        defaults, entries = data.get("defaults") or {}, data["jobs"]
        extra = set(data) - {"jobs", "defaults"}
        if extra:
            raise ConfigError(f"{path}: unknown top-level key {sorted(extra)[0]!r}; "
                              f"a job file has 'defaults' and 'jobs'")
    else:
        defaults, entries = {}, data if isinstance(data, list) else [data]
    if not isinstance(defaults, dict) or not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a 'jobs:' list of mappings (see workflows/README.md)")
    jobs = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: job {i} is not a mapping of settings (see workflows/README.md)")
        jobs.append(job_from_mapping({**defaults, **entry}, f"{path}: job {i}", base=path.parent,
                                     default_name=f"{path.stem}-{i}"))
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"{path}: two jobs are named {twice!r}; names must differ")
    return jobs


def job_from_mapping(data: dict[str, Any], where: str, base: Path, default_name: str) -> Job:
    for key in data:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(KNOWN_KEYS)}"
            raise ConfigError(f"{where}: unknown key {key!r}; {hint}")
    name = str(data.get("name", default_name))
    where = f"{where} ({name})"
    inputs = data.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs or not isinstance(inputs, list):
        raise ConfigError(f"{where}: 'inputs' must list files, globs, directories or @lists")
    if "output_dir" not in data:
        raise ConfigError(f"{where}: 'output_dir' is missing; say where the masks go")
    try:  # RunConfig checks every value itself (types, bounds, value lists): the CLI's errors, named here
        config = replace(RunConfig(), **{k: _text_form(k, v) for k, v in data.items() if k in SETTINGS})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Job(name=name, inputs=tuple(str(_resolve(base, str(s))) for s in inputs),
               output_dir=_resolve(base, str(data["output_dir"])),
               name_template=str(data.get("name_template", DEFAULT_TEMPLATE)), config=config)


def _resolve(base: Path, text: str) -> Path:
    if text.startswith("@"):
        return Path("@" + str(_resolve(base, text[1:])))
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _text_form(key: str, value: Any) -> Any:
    """A job file's ``value`` for setting ``key`` as RunConfig takes it: the command line's text form parsed
    (``bands: "3,2,1"``), a YAML list as a tuple; RunConfig checks the rest."""
    parse = SETTINGS[key].parse
    if parse is not None and isinstance(value, str):
        return parse(value)
    return tuple(value) if isinstance(value, list) and value_type(key) is tuple else value


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long, a loop of links
        return False


@dataclass(frozen=True)
class ListProblem:
    """A line of an ``@list`` file that names no file; its text is never shown (a list may be any file)."""

    listing: Path
    line: int

    def __str__(self) -> str:
        return f"{self.listing} line {self.line}"

    @property
    def message(self) -> str:
        return f"{self}: not a path to an existing file (the line is not shown); fix the list"


def expand_inputs(specs: tuple[str, ...] | list[str]) -> tuple[list[Path | ListProblem], list[str]]:
    """Files for ``specs`` in a stable order, and a note for each spec that matched nothing.

    A plain path is kept even if missing, so that scene fails with its own reason; a list file's line that
    names no existing file is a :class:`ListProblem` (its scene fails with "line N: not a path").
    """
    from geoseg.io.publish import PARTIAL_MARK
    from geoseg.io.record import is_geoseg_output  # rasterio: only when inputs are expanded

    found: list[Path | ListProblem] = []
    empty: list[str] = []
    for spec in specs:
        if spec.startswith("@"):
            listing = Path(spec[1:])
            lines = read_text(listing, MAX_LIST_FILE_BYTES, "list of inputs").splitlines()
            for number, line in enumerate(lines, 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                path = Path(text) if len(text) < 4096 and text.isprintable() else None
                path = path if path is None or path.is_absolute() else listing.parent / path
                found.append(path if path is not None and _is_file(path) else ListProblem(listing, number))
        elif Path(spec).is_dir():
            rasters = sorted(p for p in Path(spec).iterdir()
                             if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
                             and not p.name.startswith(".") and PARTIAL_MARK not in p.name)
            rasters = [p for p in rasters if not is_geoseg_output(p)]  # masks written beside their scenes
            found += rasters
            if not rasters:
                empty.append(f"{spec}: directory holds no rasters ({', '.join(RASTER_SUFFIXES)})")
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec))
            matches = [p for p in matches if not is_geoseg_output(p)]
            found += matches
            if not matches:
                empty.append(f"{spec}: matched no files")
        else:
            found.append(Path(spec))
    unique = list(dict.fromkeys(found))
    return unique, empty
