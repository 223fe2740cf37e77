"""``geoseg train``: an smp network for the user's own classes, from images and labels, into a package.

Chips are read window by window (:mod:`geoseg.train.chips`), the validation split is spatial, unlabelled
and nodata pixels are left out of the loss (``ignore_index``), classes are weighted by inverse square
root of their frequency, inputs are normalised by statistics of the training data (written to the card).
The encoder starts from ImageNet weights found in the local caches (never downloaded), from the
built-in Sentinel-2 / Landsat model's encoder, or at random. A checkpoint is written each epoch
(``PACKAGE.train/checkpoint.pt``: tensors and numbers only, read back with ``weights_only=True``); the
package holds the best epoch by validation mean IoU; training stops early after ``patience`` epochs
without improvement.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.bands import BAND_ALIASES, band_matches, match_bands
from geoseg.config import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from geoseg.engine.device import resolve_device
from geoseg.errors import ConfigError, ModelError, OutputError
from geoseg.io.scene import open_scene
from geoseg.io.stack import local_raster
from geoseg.models.architectures import architecture_class
from geoseg.models.card import ClassInfo, ModelCard, Scaling, class_colour
from geoseg.models.importing import architecture_name
from geoseg.models.package import save_package
from geoseg.models.registry import BUILTIN_MODELS, load_model
from geoseg.sensors import get_sensor, sensor_from_name
from geoseg.train.checkpoint import EpochRecord, TrainingState, load_checkpoint, save_checkpoint
from geoseg.train.chips import ChipReader, EpochSampler, TrainChips, TrainImage, ValChips, band_statistics, split_cells
from geoseg.train.config import TrainConfig
from geoseg.train.labels import open_labels
from geoseg.train.metrics import IGNORE, Accuracy, confusion

INITS = ("imagenet", "none", *BUILTIN_MODELS)
#: Training steps between progress reports (each report reads the loss back from the device).
REPORT_EVERY = 20


@dataclass
class TrainSummary:
    package: str
    epochs_run: int
    best_epoch: int
    best_val_miou: float
    stopped_early: bool
    history: list[EpochRecord] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)
    train_cells: int = 0
    val_cells: int = 0
    split: str = ""  # how validation was held out: cells within each image, or whole images (chip datasets)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scaling(dtype: str, sensor_name: str | None, scale: float | None, path: Path) -> tuple[Scaling, str]:
    if scale is not None:
        return Scaling(integer_scale=scale, float_scale=scale), f"--scale {scale:g}"
    sensor = get_sensor(sensor_name) if sensor_name else sensor_from_name(path.name)
    if sensor is not None and np.dtype(dtype).kind != "f":
        return Scaling(integer_scale=sensor.scale, integer_offset=sensor.offset), f"sensor {sensor.name}"
    if dtype == "uint8":
        return Scaling(integer_scale=1 / 255), "uint8 pixels / 255"
    if np.dtype(dtype).kind in "iu":
        return Scaling(integer_scale=1e-4), "integer reflectance x 10000"
    return Scaling(), "float pixels as they are"


#: File suffixes of rasters that :func:`pair_folders` pairs.
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jp2", ".vrt", ".img")


def pair_folders(images: Path, labels: Path) -> tuple[list[Path], list[Path]]:
    """A chip dataset's folders: each raster of ``images`` with the raster of ``labels`` of the same stem."""
    found = sorted(p for p in images.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
    by_stem = {p.stem: p for p in labels.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()}
    if not found:
        raise ConfigError(f"{images}: holds no raster ({', '.join(RASTER_SUFFIXES)}); give image files or a folder "
                          f"of them")
    missing = [p.name for p in found if p.stem not in by_stem]
    if missing:
        raise ConfigError(f"{labels}: has no label raster named like {len(missing)} image(s) of {images} (e.g. "
                          f"{', '.join(missing[:3])}); label files must have their image's name")
    return found, [by_stem[p.stem] for p in found]


def _images(paths: Sequence[Path], labels: Sequence[Path], config: TrainConfig, classes: list | dict | None,
            label_field: str) -> tuple[list[TrainImage], tuple[str, ...], dict[int, str]]:
    if len(paths) == 1 and len(labels) == 1 and Path(paths[0]).is_dir() and Path(labels[0]).is_dir():
        paths, labels = pair_folders(Path(paths[0]), Path(labels[0]))
    if len(paths) != len(labels):
        raise ConfigError(f"{len(paths)} images but {len(labels)} label files; give one label file per image, in "
                          f"the same order, each after its own --labels (--labels A_LABELS --labels B_LABELS): a "
                          f"second file after one --labels is taken as an image")
    images, names, table = [], None, None
    for path, label in zip(paths, labels, strict=True):
        path, label = local_raster(path), local_raster(label)  # a URL: read through a VRT of its bands
        scene = open_scene(path)
        descriptions = get_sensor(config.sensor).bands if config.sensor else scene.descriptions
        if config.bands:
            indexes, _ = match_bands(descriptions, [str(b) for b in config.bands], str(path), config.bands)
            these = tuple(str(b) if not str(b).isdigit() else (descriptions[int(b) - 1] or f"band{b}")
                          for b in config.bands)
        else:
            indexes = tuple(range(1, scene.count + 1))
            these = tuple(_common_name(d) or f"band{i + 1}" for i, d in enumerate(descriptions))
        if names is not None and (len(these) != len(names)):
            raise ConfigError(f"{path}: has {len(these)} bands to train on, the first image {len(names)}; "
                              f"pass --bands to pick the same bands from every image")
        names = names or these
        source, found = open_labels(Path(label), scene, classes, label_field)
        if table is not None and found != table:
            raise ConfigError(f"{label}: its classes {list(found.values())} differ from the first label file's "
                              f"{list(table.values())}; pass --classes")
        table = found
        images.append(TrainImage(scene, tuple(indexes), source))
    assert names is not None and table is not None
    if len(table) < 2:
        raise ConfigError(f"{labels[0]}: only {len(table)} class; training needs at least two")
    return images, names, table


def _common_name(description: str | None) -> str | None:
    """``blue`` for a band described ``blue (B02)`` or ``B02``: the name model cards use."""
    if not description:
        return None
    hits = [n for n in BAND_ALIASES if band_matches(description, n)]
    return hits[0] if len(hits) == 1 else description


def build_model(config: TrainConfig, in_channels: int, classes: int, bands: tuple[str, ...]) -> torch.nn.Module:
    arch = architecture_class(architecture_name(config.architecture), "--architecture")
    try:
        net = arch(encoder_name=config.encoder, encoder_weights=None, in_channels=in_channels, classes=classes)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"cannot build {arch.__name__} with encoder {config.encoder!r} ({exc})") from None
    if config.init == "imagenet":
        _init_imagenet(net, config.encoder, in_channels)
    elif config.init in BUILTIN_MODELS:
        _init_from_builtin(net, config.init, config.encoder, bands)
    elif config.init != "none":
        raise ConfigError(f"--init {config.init!r}: choose one of {', '.join(INITS)}")
    return net


def _init_imagenet(net: torch.nn.Module, encoder: str, in_channels: int) -> None:
    """ImageNet encoder weights from the local Hugging Face cache, where smp keeps them: never downloaded."""
    import segmentation_models_pytorch as smp
    from huggingface_hub import try_to_load_from_cache
    from safetensors.torch import load_file

    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if settings is None:
        raise ModelError(f"--init imagenet: smp has no ImageNet weights for encoder {encoder!r}; use --init none")
    path = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings["revision"])
    if not isinstance(path, str):
        raise ModelError(f"--init imagenet: the ImageNet weights of {encoder} are not in the local cache "
                         f"({settings['repo_id']}; geoseg never downloads); copy that cache from a machine with "
                         f"internet, or use --init none or --init csmask-6b-l1c")
    encoder_module = net.encoder
    state = load_file(path)
    conv = next(k for k, v in state.items() if v.ndim == 4)
    if state[conv].shape[1] != in_channels:  # smp's own rule for other band counts: repeat and rescale
        w = state[conv]
        reps = math.ceil(in_channels / w.shape[1])
        state[conv] = torch.cat([w] * reps, dim=1)[:, :in_channels] * (w.shape[1] / in_channels)
    missing = sorted(set(encoder_module.state_dict()) - set(state))
    if missing:
        raise ModelError(f"--init imagenet: cached weights do not fit {encoder} ({missing[:2]})")
    encoder_module.load_state_dict(state, strict=False)


def _init_from_builtin(net: torch.nn.Module, name: str, encoder: str, bands: tuple[str, ...]) -> None:
    """The built-in model's encoder (trained on Sentinel-2 and Landsat); its first convolution's channels
    follow the training bands by name, bands it does not know start from the mean of its channels."""
    builtin = load_model(name)
    if builtin.card.encoder != encoder:
        raise ConfigError(f"--init {name}: its encoder is {builtin.card.encoder}; "
                          f"pass --encoder {builtin.card.encoder}")
    state = {k.removeprefix("encoder."): v for k, v in builtin.network.state_dict().items() if k.startswith("encoder.")}
    conv = next(k for k, v in state.items() if v.ndim == 4)
    w = state[conv]
    columns = [w[:, builtin.card.bands.index(b)] if b in builtin.card.bands else w.mean(1) for b in bands]
    state[conv] = torch.stack(columns, dim=1)
    unexpected = sorted(set(state) - set(net.encoder.state_dict()))
    if unexpected:
        raise ModelError(f"--init {name}: its encoder does not fit ({unexpected[:2]})")
    net.encoder.load_state_dict(state, strict=False)


def _workers(config: TrainConfig) -> int:
    if config.workers is not None:
        return config.workers
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores - 1)


def train(images: Sequence[Path], labels: Sequence[Path], output: Path, config: TrainConfig = TrainConfig(),
          classes: list | dict | None = None, label_field: str = "class", resume: bool = False,
          overwrite: bool = False, progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
          keep_checkpoint: bool = False) -> TrainSummary:
    """Train and write a model package at ``output`` (see module docstring). A run stopped (Ctrl-C, an error)
    before its first checkpoint leaves no empty ``OUTPUT.train`` folder behind; one stopped later keeps its
    checkpoint for ``resume``. Once the package is written, the checkpoint (the network, the best epoch's
    weights where they differ, the optimizer's moments: 3x to 4x the package) is removed unless
    ``keep_checkpoint``."""
    work = output.with_name(output.name + ".train")
    existed = work.exists()
    try:
        summary = _train(images, labels, output, config, classes, label_field, resume, overwrite, progress)
    except BaseException:
        if not existed and work.is_dir() and not any(work.iterdir()):
            work.rmdir()
        raise
    if not keep_checkpoint:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _train(images: Sequence[Path], labels: Sequence[Path], output: Path, config: TrainConfig,
           classes: list | dict | None, label_field: str, resume: bool, overwrite: bool,
           progress: Callable[[str, int, int, dict[str, float]], None] | None) -> TrainSummary:
    checkpoint_path = _checkpoint_path(output, overwrite, resume)
    work = checkpoint_path.parent
    torch.manual_seed(config.seed)
    found, band_names, table = _images([Path(p) for p in images], [Path(p) for p in labels], config, classes,
                                       label_field)
    first = found[0].scene
    scaling, scaling_source = _scaling(first.dtype, config.sensor, config.scale, first.path)
    scale, offset = scaling.factors(first.dtype)
    small = min(found, key=lambda i: min(i.scene.height, i.scene.width)).scene
    if min(small.height, small.width) < config.chip_size:
        raise ConfigError(f"{small.path}: is {small.width} x {small.height} px, smaller than --chip-size "
                          f"{config.chip_size}; pass a --chip-size of at most {min(small.height, small.width)}")
    reader = ChipReader(found, scale, offset, np.zeros(len(band_names)), np.ones(len(band_names)))
    train_cells, val_cells, split = split_cells(found, config.chip_size, config.val_share, config.seed)
    if not train_cells or (config.val_share > 0 and not val_cells):
        cell = train_cells[0].size if train_cells else 2 * config.chip_size
        raise ConfigError(f"too few labelled cells of {cell} px for a spatial split ({len(train_cells)} training, "
                          f"{len(val_cells)} validation); pass a smaller --chip-size")
    mean, std, counts = band_statistics(reader, train_cells, seed=config.seed)
    reader.mean, reader.std = mean.reshape(-1, 1, 1).astype(np.float32), std.reshape(-1, 1, 1).astype(np.float32)
    n_classes = len(table)
    weights = class_weights(counts[:n_classes])

    device = resolve_device(config.device)
    use_bf16 = device.type == "cuda" and config.precision in ("auto", "bf16")
    net = build_model(config, len(band_names), n_classes, band_names).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device),
                                        ignore_index=IGNORE)
    length = config.chips_per_epoch or max(config.batch_size,
                                           2 * len(train_cells) * (2 * config.chip_size) ** 2 // config.chip_size**2)
    train_set = TrainChips(reader, train_cells, config.chip_size, length, config.seed)
    workers = _workers(config)
    loader_args: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers:
        loader_args.update(persistent_workers=True, prefetch_factor=4)
    sampler = EpochSampler(length)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                                         **loader_args)
    val_loader = torch.utils.data.DataLoader(ValChips(reader, val_cells), batch_size=max(1, config.batch_size // 4),
                                             **loader_args)
    state = load_checkpoint(checkpoint_path, net, optimizer, scheduler) if resume else TrainingState()
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{work}: the training folder cannot be made ({exc.strerror}); choose a writable "
                          f"-o") from None
    names = tuple(table.values())
    last_accuracy = None
    stopped_early = False
    for epoch in range(state.epoch, config.epochs):
        if state.stale >= config.patience:
            stopped_early = True
            break
        started = time.perf_counter()
        sampler.epoch = epoch
        losses = _train_epoch(net, loader, optimizer, loss_fn, use_bf16, epoch, progress)
        steps = len(losses)
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        accuracy = evaluate_network(net, val_loader, n_classes, names, device, use_bf16)
        miou = accuracy.mean_iou if accuracy.total else float("nan")
        mean_loss = float(torch.stack(losses).float().mean()) if losses else float("nan")
        record = EpochRecord(epoch + 1, mean_loss, miou, accuracy.overall,
                             round(seconds, 3), round(steps * config.batch_size / seconds, 2))
        if progress:
            progress("epoch", epoch + 1, config.epochs, asdict(record))
        if state.scored(record, net):
            last_accuracy = accuracy
        save_checkpoint(checkpoint_path, state, net, optimizer, scheduler)
    best_state, best_epoch, best_miou, history = state.best_state, state.best_epoch, state.best_miou, state.history
    assert best_state is not None
    if last_accuracy is None:  # resumed after the best epoch: score the best weights again
        net.load_state_dict(best_state)
        last_accuracy = evaluate_network(net, val_loader, n_classes, names, device, use_bf16)
    card = ModelCard(
        name=config.name or output.name, architecture=architecture_name(config.architecture),
        encoder=config.encoder, bands=band_names, mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        classes=tuple(ClassInfo(i, n, class_colour(n, i)) for i, n in enumerate(names)),
        label_values=tuple(int(v) for v in table),
        scaling=scaling, tile_size=DEFAULT_TILE_SIZE, overlap=DEFAULT_OVERLAP, resolution_m=round(first.pixel_size_m, 3)
        if first.pixel_size_m else None,
        description=f"trained by geoseg train on {len(found)} image(s); best epoch {best_epoch}, validation mIoU "
                    f"{best_miou:.3f} (spatial hold-out)",
        network={"_model_class": architecture_name(config.architecture), "encoder_name": config.encoder,
                 "encoder_weights": None, "in_channels": len(band_names), "classes": n_classes},
        provenance=f"scaling: {scaling_source}; mean/std from {min(64, len(train_cells))} training cells; "
                   f"init {config.init}",
    )
    save_package(output, card, best_state, overwrite=True)
    return TrainSummary(str(output), len(history), best_epoch, round(best_miou, 6),
                        stopped_early, history, last_accuracy.to_dict(), len(train_cells), len(val_cells), split)


def _checkpoint_path(output: Path, overwrite: bool, resume: bool) -> Path:
    """Where training keeps its checkpoint (``OUTPUT.train/checkpoint.pt``), once ``output`` may be written."""
    if output.exists() and not (overwrite or resume):
        raise OutputError(f"{output}: already exists; pass --overwrite or choose another -o")
    if not output.parent.is_dir():
        raise OutputError(f"{output}: folder {output.parent} does not exist; create it first")
    if not os.access(output.parent, os.W_OK):
        raise OutputError(f"{output}: folder {output.parent} is not writable; choose another -o")
    path = output.with_name(output.name + ".train") / "checkpoint.pt"
    if resume and not path.is_file():
        raise OutputError(f"{path}: no checkpoint to resume from; start without --resume")
    return path


def class_weights(counts: np.ndarray) -> np.ndarray:
    """The loss's class weights from labelled pixel counts: 1/sqrt(frequency), mean 1 over the classes present, 0
    for a class with no pixels."""
    freq = counts.astype(float) / max(counts.sum(), 1)
    weights = np.where(freq > 0, 1 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
    return weights / weights[weights > 0].mean()


def _train_epoch(net: torch.nn.Module, loader: torch.utils.data.DataLoader, optimizer: torch.optim.Optimizer,
                 loss_fn: torch.nn.Module, use_bf16: bool, epoch: int,
                 progress: Callable[[str, int, int, dict[str, float]], None] | None) -> list[torch.Tensor]:
    """One pass over ``loader``; each step's loss, kept on the device (reading it each step would stall the GPU)."""
    device = next(net.parameters()).device
    net.train()
    losses: list[torch.Tensor] = []
    steps = len(loader)
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_fn(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if progress and (step == 0 or step % REPORT_EVERY == REPORT_EVERY - 1 or step == steps - 1):
            recent = float(torch.stack(losses[-REPORT_EVERY:]).mean())
            progress("train", step + 1, steps, {"epoch": epoch + 1, "loss": recent})
    return losses


def evaluate_network(net: torch.nn.Module, loader: torch.utils.data.DataLoader, classes: int,
                     names: tuple[str, ...], device: torch.device, bf16: bool) -> Accuracy:
    net.eval()
    matrix = np.zeros((classes, classes), np.int64)
    with torch.inference_mode():
        for x, y in loader:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                pred = net(x.to(device)).argmax(1).cpu().numpy()
            matrix += confusion(y.numpy(), pred, classes)
    net.train()
    return Accuracy(matrix, names)
