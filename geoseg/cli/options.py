"""Parsers for option values the CLI shares, turning bad strings into clear messages."""

from __future__ import annotations

from typing import Any

import typer

from geoseg.blend import BLEND_WINDOWS
from geoseg.inference import PRECISIONS
from geoseg.run import SETTINGS, RunConfig


def parse_bands(value: str | None) -> tuple[int | str, ...] | None:
    """``"4,3,2"`` or ``"red,green,blue"`` -> a tuple of indexes / names."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if not all(parts):
        raise typer.BadParameter(f"{value!r} has an empty entry; list bands like 3,2,1,4 or red,green,blue,nir")
    return tuple(int(p) if p.isdigit() else p for p in parts)


def run_config(values: dict[str, Any], **extra: Any) -> RunConfig:
    """The RunConfig of a command from its parameters (its ``locals()``): every shared setting below
    (:data:`geoseg.run.SETTINGS`, ``--bands`` parsed) and ``extra``. A setting missing from the
    command's signature is a KeyError here, so the commands cannot drift from RunConfig."""
    settings = {name: values[name] for name in SETTINGS}
    return RunConfig(**{**settings, "bands": parse_bands(settings["bands"]), **extra})


def check_choice(value: str, choices: tuple[str, ...] | list[str], what: str) -> str:
    if value not in choices:
        raise typer.BadParameter(f"{what} {value!r} is not one of {', '.join(choices)}")
    return value


def blend_option(value: str) -> str:
    return check_choice(value, list(BLEND_WINDOWS), "blend window")


def precision_option(value: str) -> str:
    return check_choice(value, PRECISIONS, "precision")


# The settings `geoseg run` and `geoseg batch` share, defined once (defaults from RunConfig).
D = RunConfig()
MODEL = typer.Option(D.model, help="Built-in model name (see `geoseg models`), model folder, or auto.")
BANDS = typer.Option(None, help="Scene bands in the model's input order: 1-based indexes or names, "
                     "comma-separated \\[default: matched by band name]")
TILE_SIZE = typer.Option(None, help="Patch edge in pixels, a multiple of 32 \\[default: model's]")
OVERLAP = typer.Option(None, help="Overlap between patches in pixels \\[default: model's]")
BLEND = typer.Option(D.blend, callback=blend_option, help="Blend window: cosine, gaussian or none.")
BATCH_SIZE = typer.Option(None, min=1, help="Patches per model call; halved automatically when the GPU runs out "
                          "of memory \\[default: from free GPU memory, up to 16; 4 on the CPU]")
DEVICE = typer.Option(D.device, help="auto, cpu, cuda or cuda:N.")
PRECISION = typer.Option(D.precision, callback=precision_option,
                         help="auto (bf16 on CUDA and on CPUs with bf16 instructions, else fp32), fp32, bf16 "
                         "or fp16.")
MATCH_RESOLUTION = typer.Option(D.match_resolution, help="Infer at the model's training resolution when the scene "
                                "is clearly finer; the mask stays on the scene's grid.")
SCALE = typer.Option(None, help="Multiply pixel values by this before normalising "
                     "\\[default: model's, e.g. 0.0001 for uint16 reflectance]")
BLOCK_SIZE = typer.Option(D.block_size, min=1, help="Scene pixels per processing block edge.")
WORKERS = typer.Option(None, min=1, help="Reader threads \\[default: CPU cores minus one]")
TRUST_CHECKPOINT = typer.Option(D.trust_checkpoint, help="Allow a model folder's pickled checkpoint (model.pt, "
                                ".pth, .ckpt): loading one can run code, so only for files you trust.")
COMPILE = typer.Option(D.compile, "--compile/--no-compile", help="torch.compile the network: faster model calls "
                       "after a one-off compile (tens of seconds); pays on long runs and batches.")
CUDA_GRAPHS = typer.Option(D.cuda_graphs, "--cuda-graphs/--no-cuda-graphs", show_default=False,
                           help="Replay the model from a CUDA graph: one launch per batch instead of hundreds "
                           "\\[default: on a GPU]")
