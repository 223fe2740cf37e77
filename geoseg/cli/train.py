"""``geoseg train`` and ``geoseg evaluate``: a model for your own classes, and a mask's accuracy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from geoseg.cli.errors import user_errors
from geoseg.cli.options import json_option
from geoseg.config import parse_bands


def _classes(spec: str | None) -> list | dict | None:
    from geoseg.models.importing import load_class_spec

    return load_class_spec(spec)


def train(
    images: list[Path] = typer.Argument(..., help="Training images (GeoTIFF ...), or one folder of them with "
                                        "--labels a folder of label rasters of the same names.", show_default=False,
                                        metavar="IMAGE..."),
    labels: list[Path] = typer.Option(..., "--labels", help="Label raster on each image's grid, or a vector layer "
                                      "with a class field; one per image, in order.", show_default=False,
                                      metavar="LABELS"),
    output: Path = typer.Option(..., "-o", "--output", help="Model package folder to write.", show_default=False),
    classes: str | None = typer.Option(None, help="Class names: a YAML file (list, or label value: name) or "
                                       "comma-separated [default: the labels' CLASSES tag]", show_default=False),
    label_field: str = typer.Option("class", help="Field of vector labels that holds the class."),
    architecture: str = typer.Option("Unet", help="smp architecture."),
    encoder: str | None = typer.Option(None, help="smp encoder (resnet34, vgg16, efficientnet-b4 ...) [default: "
                                       "the --init model's, else resnet34].", show_default=False),
    init: str = typer.Option("none", help="Encoder start: imagenet (from the local cache, never downloaded), a "
                             "built-in model's encoder (csmask-6b-l1c ...), or none."),
    epochs: int = typer.Option(20, min=1, help="Passes over the training chips, at most (see --patience)."),
    batch_size: int = typer.Option(16, min=1, help="Chips per training step."),
    chip_size: int = typer.Option(256, min=32, help="Chip edge in pixels, a multiple of 32."),
    chips_per_epoch: int | None = typer.Option(None, min=1, help="[default: twice the training area]",
                                               show_default=False),
    learning_rate: float = typer.Option(1e-3, min=0, help="The optimiser's starting learning rate."),
    val_share: float = typer.Option(0.2, min=0, max=0.9, help="Share of cells held out for validation."),
    patience: int = typer.Option(5, min=1, help="Stop after this many epochs without a better validation mIoU."),
    bands: str | None = typer.Option(None, help="Scene bands to train on, by name or index [default: all]",
                                     show_default=False),
    sensor: str | None = typer.Option(None, help="The images' sensor preset (band names and scaling).",
                                      show_default=False),
    scale: float | None = typer.Option(None, help="Multiply pixels by this [default: from the sensor or dtype]",
                                       show_default=False),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    workers: int | None = typer.Option(None, min=0, help="Chip-reading processes [default: cores - 1]",
                                       show_default=False),
    seed: int = typer.Option(0, help="Seed of the split, the chips and the network's start: the same seed, the "
                             "same run."),
    resume: bool = typer.Option(False, help="Go on from OUTPUT.train/checkpoint.pt."),
    keep_checkpoint: bool = typer.Option(False, help="Keep OUTPUT.train/checkpoint.pt (about 4x the package: the "
                                         "optimizer's state) once the package is written, to go on later with "
                                         "--resume and more --epochs."),
    overwrite: bool = typer.Option(False, help="Replace an existing package."),
    as_json: bool = json_option(),
) -> None:
    """Train an smp network on labelled images and write a model package `geoseg run --model` uses."""
    from geoseg.train.config import TrainConfig

    with user_errors(as_json):
        config = TrainConfig(architecture=architecture, encoder=encoder, init=init, epochs=epochs,
                             batch_size=batch_size, chip_size=chip_size, chips_per_epoch=chips_per_epoch,
                             learning_rate=learning_rate, val_share=val_share, patience=patience, device=device,
                             workers=workers, bands=tuple(str(b) for b in parse_bands(bands)) if bands else None,
                             sensor=sensor, scale=scale, seed=seed)
        from geoseg.train.trainer import train as run_training  # torch: only once the settings are known good

        err = Console(stderr=True)
        if as_json or not err.is_terminal:
            def report(kind: str, done: int, total: int, values: dict) -> None:
                if kind == "epoch" and not as_json:
                    print(f"epoch {done}/{total}: loss {values['loss']:.4f}, validation mIoU {values['val_miou']:.3f}"
                          f", {values['chips_per_second']:.1f} chips/s", file=sys.stderr, flush=True)
            summary = run_training(images, labels, output, config, _classes(classes), label_field, resume, overwrite,
                                   report, keep_checkpoint)
        else:
            with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                          TextColumn("loss {task.fields[loss]}  val mIoU {task.fields[miou]}"),
                          TimeElapsedColumn(), console=err, transient=False) as bar:
                # "-" until the first loss is read back from the device (a few steps in), never "nan"
                task = bar.add_task("train", total=None, epoch=1, loss="-", miou="-")

                def report(kind: str, done: int, total: int, values: dict) -> None:
                    if kind == "train":
                        bar.update(task, completed=done, total=total, epoch=values["epoch"],
                                   loss=f"{values['loss']:.4f}")
                    else:
                        bar.update(task, miou=f"{values['val_miou']:.3f}")
                        err.print(f"epoch {done}/{total}: loss {values['loss']:.4f}, validation mIoU "
                                  f"{values['val_miou']:.3f}, {values['chips_per_second']:.1f} chips/s")

                summary = run_training(images, labels, output, config, _classes(classes), label_field, resume,
                                       overwrite, report, keep_checkpoint)
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
        return
    Console().print(f"{output}: best epoch {summary.best_epoch} of {summary.epochs_run}, validation mIoU "
                    f"{summary.best_val_miou:.3f} on {summary.val_cells} held-out cells ({summary.split})"
                    + (" (stopped early)" if summary.stopped_early else ""))
    Console().print(accuracy_table(summary.validation, "validation (held-out cells)"))


def evaluate(
    mask: Path = typer.Argument(..., help="A class mask (geoseg's or any single-band class raster).",
                                show_default=False),
    labels: Path = typer.Argument(..., help="Reference labels: a raster on the mask's grid or a vector layer.",
                                  show_default=False),
    classes: str | None = typer.Option(None, help="Names of the label values (YAML or comma-separated) "
                                       "[default: the labels' CLASSES tag]", show_default=False),
    label_field: str = typer.Option("class", help="Field of vector labels that holds the class."),
    match: str = typer.Option("auto", "--match", help="Match reference classes to the mask's by value or by name "
                              "(auto: by name where both have names; every name must then be matched)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write the per-class table as CSV.",
                                       show_default=False),
    as_json: bool = json_option(),
) -> None:
    """Confusion matrix, overall accuracy, kappa, per-class IoU / F1 of MASK against LABELS."""
    from geoseg.train.evaluate import evaluate_mask

    with user_errors(as_json):
        result = evaluate_mask(mask, labels, _classes(classes), label_field, match=match).to_dict()
        if output is not None:
            from geoseg.export.stats import write_csv

            header = list(result["classes"][0])
            write_csv(output, header, [[row[k] for k in header] for row in result["classes"]])
    if as_json:
        print(json.dumps(result, indent=2))
        return
    Console().print(accuracy_table(result, f"{mask.name} against {labels.name}"))
    Console().print(confusion_table(result))
    left = ", ".join(f"{n:,} px: {why}" for why, n in result["left_out"].items() if n) or "none"
    Console().print(f"classes matched by {result['match']}; labelled pixels left out: {left}")


def confusion_table(result: dict) -> Table:
    """The confusion matrix with its classes named: reference classes down, predicted classes across."""
    names = [f"{c['value']} {c['name']}" for c in result["classes"]]
    table = Table("reference \\ predicted", *names, title="confusion matrix (pixels)", title_justify="left")
    for name, row in zip(names, result["confusion_matrix"], strict=True):
        table.add_row(name, *(f"{v:,}" for v in row))
    return table


def accuracy_table(result: dict, title: str) -> Table:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    table = Table("class", "reference px", "predicted px", "IoU", "F1", "precision", "recall",
                  title=f"{title}: {result['pixels']:,} px, overall accuracy {f(result['overall_accuracy'])}, "
                        f"kappa {f(result['kappa'])}, mean IoU {f(result['mean_iou'])}")
    for c in result["classes"]:
        table.add_row(f"{c['value']} {c['name']}", f"{c['reference_pixels']:,}", f"{c['predicted_pixels']:,}",
                      f(c["iou"]), f(c["f1"]), f(c["precision"]), f(c["recall"]))
    return table
