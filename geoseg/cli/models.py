"""``geoseg models``: list the built-in models; show, check, import and export model packages; list sensors."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from geoseg.cli.errors import user_errors
from geoseg.cli.options import json_option
from geoseg.config import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, parse_bands
from geoseg.errors import ConfigError, ModelError, OutputError
from geoseg.sensors import SENSORS

if TYPE_CHECKING:  # the model modules import numpy: loaded by the commands that use them, not by every command
    from geoseg.models.card import ModelCard

models = typer.Typer(help="Models: the built-in ones, packages of your own (show, check, import), sensors, "
                          "the cache.",
                     invoke_without_command=True)


@models.callback()
def _default(ctx: typer.Context,
             as_json: bool = json_option()) -> None:
    """List the built-in models (pass a name to `geoseg run --model`; `auto` picks one per scene)."""
    if ctx.invoked_subcommand is None:
        list_models(as_json)


@models.command("list")
def list_models(as_json: bool = json_option()) -> None:
    """List the built-in models and the packages `geoseg models pull` made."""
    from geoseg.models.cache import packages_dir
    from geoseg.models.registry import builtin_cards, get_card

    with user_errors(as_json):
        cards = builtin_cards()
        pulled = sorted(p for p in packages_dir().glob("*") if p.is_dir()) if packages_dir().is_dir() else []
        cards += [get_card(str(p)) for p in pulled]
    if as_json:
        print(json.dumps([_card_json(c) for c in cards], indent=2))
        return
    table = Table("name", "bands", "classes", "tile / overlap", "trained at",
                  title="built-in models and pulled packages (--json for full cards)")
    for c in cards:
        table.add_row(c.name, ", ".join(c.bands), ", ".join(f"{k.value}={k.name}" for k in c.classes),
                      f"{c.tile_size} / {c.overlap}", f"{c.resolution_m:g} m" if c.resolution_m else "-")
    Console().print(table)


@models.command()
def show(model: str = typer.Argument(..., help="A model package folder or a built-in name.", show_default=False),
         as_json: bool = json_option(),
         stac: bool = typer.Option(False, "--stac", help="Print the model as a STAC Item with the Machine Learning "
                                   "Model extension (MLM v1.5.0), for a catalogue.")) -> None:
    """Explain a model: its network, inputs and how they are scaled, classes, tiling."""
    from geoseg.models.card import network_config
    from geoseg.models.registry import get_card

    with user_errors(as_json or stac):
        card = get_card(model)
        if stac:
            from geoseg.models.mlm import mlm_item
            from geoseg.models.registry import resolve_name

            item = mlm_item(card, resolve_name(model))
    if stac:
        print(json.dumps(item, indent=2))
        return
    if as_json:
        print(json.dumps(_card_json(card), indent=2))
        return
    net = network_config(card)
    table = Table(show_header=False, title=f"model {card.name}")
    table.add_row("network", f"smp {net['_model_class']}, encoder {net.get('encoder_name')}")
    table.add_row("inputs", "\n".join(f"{i + 1}. {b}: mean {m:.4g}, std {s:.4g}"
                                      for i, (b, m, s) in enumerate(zip(card.bands, card.mean, card.std, strict=True))))
    table.add_row("scaling", f"integer pixels x {card.scaling.integer_scale:g} + {card.scaling.integer_offset:g}; "
                  f"float pixels x {card.scaling.float_scale:g}")
    labels = card.label_values or ()
    table.add_row("classes", "\n".join(f"{c.value} {c.name} #{bytes(c.color).hex()}"
                                       + (f" (label value {labels[c.value]} in training)" if labels else "")
                                       for c in card.classes))
    table.add_row("tiling", f"tile {card.tile_size} px, overlap {card.overlap} px")
    table.add_row("trained at", f"{card.resolution_m:g} m" if card.resolution_m else "not stated")
    if card.description:
        table.add_row("about", card.description)
    if card.provenance:
        table.add_row("provenance", card.provenance)
    Console().print(table)


@models.command()
def check(model: str = typer.Argument(..., help="A model package folder or a built-in name.", show_default=False),
          trust_checkpoint: bool = typer.Option(False, help="Allow a pickled checkpoint in the folder.")) -> None:
    """Load a model (every weight must fit) and run one patch through it on the CPU."""
    from geoseg.models.check import check_model

    with user_errors():
        found = check_model(model, trust_checkpoint)
    Console().print(f"{model}: ok, {found.parameters / 1e6:.1f} M parameters, one {found.card.tile_size}-px patch -> "
                    f"{found.card.num_classes} classes in {found.seconds:.1f} s")


@models.command("import")
def import_(
    source: Path = typer.Argument(..., help="smp folder, .safetensors, state dict (.pt/.pth), Lightning/TorchGeo "
                                  ".ckpt or TorchScript file.", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="The package folder to write.", show_default=False),
    bands: str | None = typer.Option(None, help="Input bands in order, by name (red,green,blue,nir).",
                                     show_default=False),
    sensor: str | None = typer.Option(None, help="Take the bands and scaling of a sensor preset (see "
                                      "`geoseg models sensors`).", show_default=False),
    classes: str | None = typer.Option(None, help="Class names, comma-separated or a YAML/JSON file (a list of "
                                       "names or of {name, color}).", show_default=False),
    architecture: str | None = typer.Option(None, help="smp architecture, where the source does not say (Unet, "
                                            "FPN, DeepLabV3Plus ...).", show_default=False),
    encoder: str | None = typer.Option(None, help="smp encoder, where the source does not say (resnet34, vgg16 "
                                       "...).", show_default=False),
    mean: str | None = typer.Option(None, help="Per-band mean after scaling, comma-separated.", show_default=False),
    std: str | None = typer.Option(None, help="Per-band std after scaling, comma-separated.", show_default=False),
    scale: float | None = typer.Option(None, help="Multiply integer pixels by this before normalising.",
                                       show_default=False),
    tile_size: int | None = typer.Option(None, help=f"Patch edge in pixels [default: {DEFAULT_TILE_SIZE}]",
                                         show_default=False),
    overlap: int | None = typer.Option(None, help=f"Patch overlap in pixels [default: {DEFAULT_OVERLAP}]",
                                       show_default=False),
    resolution: float | None = typer.Option(None, help="Ground resolution the model was trained at, in metres.",
                                            show_default=False),
    trust_checkpoint: bool = typer.Option(False, help="Allow pickled and TorchScript sources (read with "
                                          "weights_only=True); only for files you trust."),
    overwrite: bool = typer.Option(False, help="Replace an existing package."),
) -> None:
    """Make a geoseg model package (safetensors only) from weights made elsewhere."""
    from geoseg.models.importing import import_model, parse_classes

    with user_errors():
        card = import_model(
            source, output, bands=tuple(str(b) for b in parse_bands(bands) or ()) if bands is not None else None,
            sensor=sensor, classes=parse_classes(classes), architecture=architecture, encoder=encoder,
            mean=_floats(mean, "--mean"), std=_floats(std, "--std"), scale=scale, tile_size=tile_size,
            overlap=overlap, resolution_m=resolution, trust_checkpoint=trust_checkpoint, overwrite=overwrite)
    Console().print(f"{output}: model package written ({card.architecture} / {card.encoder}, "
                    f"{len(card.bands)} bands, {card.num_classes} classes); `geoseg models check {output}` tries it")


@models.command()
def export(
    model: str = typer.Argument(..., help="A model package folder or a built-in name.", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="The ONNX file to write (NAME.onnx).",
                                show_default=False),
    fmt: str = typer.Option("onnx", "--format", help="onnx (logits out, geoseg's card inside: `geoseg run --model "
                            "FILE.onnx` runs it) or deepness (probabilities out, and QGIS Deepness's metadata too)."),
    overwrite: bool = typer.Option(False, help="Replace an existing file."),
    trust_checkpoint: bool = typer.Option(False, help="Allow a pickled checkpoint in the folder."),
    as_json: bool = json_option(),
) -> None:
    """Export a model to one ONNX file with its card (and QGIS Deepness's metadata with --format deepness)."""
    from geoseg.models import load_model
    from geoseg.models.onnxfile import export_model
    from geoseg.models.onnxfile import is_onnx_model as is_onnx_name

    with user_errors(as_json):
        if is_onnx_name(model):
            raise ModelError(f"{model}: is an ONNX file already; export a model package or a built-in model")
        loaded = load_model(model, trust_checkpoint)
        written = export_model(loaded.network, loaded.card, output, fmt, overwrite)
    if as_json:
        print(json.dumps(written, indent=2))
        return
    Console().print(f"{output}: {fmt} model written ({written['bytes'] / 1e6:.1f} MB; {len(written['bands'])} bands "
                    f"{','.join(written['bands'])}; {len(written['classes'])} classes; patches of "
                    f"{written['tile_size']} px); `geoseg run --model {output}` runs it on the CPU")


@models.command()
def pull(
    repo: str = typer.Argument(..., help="A Hugging Face model repository: OWNER/NAME or its https://huggingface.co "
                               "address (smp's config.json + model.safetensors).", show_default=False),
    name: str | None = typer.Option(None, help="The package's name for --model [default: the repository's]"),
    revision: str | None = typer.Option(None, help="A branch, tag or commit [default: main]"),
    bands: str | None = typer.Option(None, help="Input bands in order, where the repository does not say "
                                     "(red,green,blue,nir).", show_default=False),
    sensor: str | None = typer.Option(None, help="Take the bands and scaling of a sensor preset.", show_default=False),
    classes: str | None = typer.Option(None, help="Class names, where the repository does not say (comma-separated "
                                       "or a YAML/JSON file).", show_default=False),
    overwrite: bool = typer.Option(False, help="Replace a package pulled before under the same name."),
    as_json: bool = json_option(),
) -> None:
    """Fetch an smp model repository from the Hugging Face Hub into geoseg's cache as a package for --model NAME
    (HF_HUB_OFFLINE=1 uses only what the cache holds; pickles are never fetched)."""
    from geoseg.models.hub import pull as pull_model
    from geoseg.models.importing import parse_classes

    with user_errors(as_json):
        pulled = pull_model(repo, name=name, revision=revision,
                            bands=tuple(str(b) for b in parse_bands(bands) or ()) if bands is not None else None,
                            classes=parse_classes(classes), sensor=sensor, overwrite=overwrite)
    if as_json:
        print(json.dumps(pulled.to_dict(), indent=2))
        return
    Console().print(f"{pulled.repo}@{pulled.revision[:12]}: package {pulled.package.name!r} at {pulled.package} "
                    f"({len(pulled.card.bands)} bands, {pulled.card.num_classes} classes); `geoseg run --model "
                    f"{pulled.package.name}` uses it")


@models.command()
def cache(clear: bool = typer.Option(False, "--clear", help="Remove what geoseg makes again when it is missing "
                                     "(conversions, exports, traces, probes); keep what was pulled."),
          as_json: bool = json_option()) -> None:
    """Show what geoseg's cache holds, folder by folder, and its size; --clear empties the folders geoseg fills
    by itself (clear it while no run is going: a run only makes again what it needs)."""
    from geoseg.models.cache import cache_dir, cache_usage, clear_derived

    with user_errors(as_json):
        try:
            freed = clear_derived() if clear else None
            usage = cache_usage()
        except OSError as exc:
            raise OutputError(f"{cache_dir()}: the cache cannot be read or cleared ({exc.strerror}); check its "
                              f"permissions (GEOSEG_CACHE_DIR moves it)") from None
    total = sum(f.bytes for f in usage)
    if as_json:
        document = {"path": str(cache_dir()), "bytes": total, "folders": [asdict(f) for f in usage]}
        if freed is not None:
            document["cleared"] = {"files": freed[0], "bytes": freed[1]}
        print(json.dumps(document, indent=2))
        return
    table = Table("folder", "holds", "files", "MiB", "--clear",
                  title=f"geoseg's cache at {cache_dir()} (GEOSEG_CACHE_DIR moves it): {total / 2**20:,.1f} MiB")
    for f in usage:
        table.add_row(f.name, f.holds, str(f.files), f"{f.bytes / 2**20:,.1f}", "removes" if f.derived else "keeps")
    Console().print(table)
    if freed is not None:
        Console().print(f"removed {freed[0]} file(s), {freed[1] / 2**20:,.1f} MiB; what was pulled is kept "
                        f"(remove a package with rm -r)")


@models.command()
def sensors(as_json: bool = json_option()) -> None:
    """The sensor presets `--sensor` takes: band order, wavelengths, scaling."""
    if as_json:
        print(json.dumps({n: {"description": s.description, "bands": s.bands, "wavelengths_um": s.wavelengths_um,
                              "scale": s.scale, "offset": s.offset, "dtype": s.dtype} for n, s in SENSORS.items()},
                         indent=2))
        return
    table = Table("sensor", "bands (in file order)", "scale", "about")
    for s in SENSORS.values():
        table.add_row(s.name, ", ".join(s.bands), f"{s.scale:.3g}" + (f" {s.offset:+g}" if s.offset else ""),
                      s.description)
    Console().print(table)


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give comma-separated numbers, one per band") from None


def _card_json(card: ModelCard) -> dict:
    data = card.to_dict()
    if data.get("network") is None:
        data.pop("network", None)
    return data
