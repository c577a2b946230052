"""Training on painted labels, as a generator of small typed events.

The generator runs one optimiser step between events, so a caller stops it cleanly by
closing it (or setting ``stop``); the best weights are kept either way.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .allocator import in_a_job
from .config import ModelConfig, TrainConfig
from .devices import cpu_has_native_bfloat16
from .errors import InputError
from .layout import resolve_layout
from .losses import masked_loss, resolve_loss_name
from .normalization import Normalizer, check_finite, fit_normalizer
from .targets import check_labels_dtype, check_painted_classes, make_targets

StopReason = Literal["time", "epochs", "stopped"]

#: At most this many painted pixels per class are kept as patch centres.
MAX_CENTRES_PER_CLASS = 200_000
#: At most this many validation regions are scored after each epoch.
MAX_VALIDATION_REGIONS = 64
#: Context added around a validation region so its pixels see what training pixels see.
VALIDATION_MARGIN = 32
#: Fewer painted pixels than this and no validation share is held out.
MIN_PIXELS_FOR_VALIDATION = 400


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class TrainingStarted:
    device: str
    n_planes: int
    train_pixels: int
    validation_pixels: int
    patch_size: int
    steps_per_epoch: int
    max_seconds: float | None
    max_epochs: int | None


@dataclass(frozen=True)
class StepDone:
    step: int
    epoch: int
    loss: float
    learning_rate: float
    elapsed: float
    remaining: float | None


@dataclass(frozen=True)
class EpochDone:
    epoch: int
    step: int
    train_loss: float
    validation_dice: float | None
    best_validation_dice: float | None
    improved: bool
    elapsed: float
    remaining: float | None


@dataclass
class TrainingHistory:
    """What happened in one training run; ``Segmenter.train`` returns it."""

    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    validation_dice: list[float | None] = field(default_factory=list)
    best_epoch: int | None = None
    best_validation_dice: float | None = None
    steps: int = 0
    elapsed: float = 0.0
    stop_reason: StopReason = "epochs"
    device: str = "cpu"

    @property
    def epochs(self) -> int:
        return len(self.epoch_losses)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly digest, stored in the model's config."""
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "seconds": round(self.elapsed, 1),
            "stop_reason": self.stop_reason,
            "best_epoch": self.best_epoch,
            "best_validation_dice": self.best_validation_dice,
            "final_loss": self.epoch_losses[-1] if self.epoch_losses else None,
            "device": self.device,
        }


@dataclass(frozen=True)
class TrainingDone:
    history: TrainingHistory


TrainingEvent = TrainingStarted | StepDone | EpochDone | TrainingDone


# --------------------------------------------------------------------------- data


@dataclass
class TrainingPlane:
    """One 2-D plane: normalised image (C, Y, X), class indices, and which pixels count where."""

    image: np.ndarray
    classes: np.ndarray
    train_mask: np.ndarray
    validation_mask: np.ndarray


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def prepare_planes(
    images: Any,
    labels: Any,
    model_config: ModelConfig,
    train_config: TrainConfig,
    normalization_config: Any,
    axes: str | None = None,
) -> list[TrainingPlane]:
    """Check images and painted labels and turn them into training planes (inputs untouched)."""
    image_list, labels_list = _as_list(images), _as_list(labels)
    if len(image_list) != len(labels_list):
        raise InputError(
            f"got {len(image_list)} image(s) but {len(labels_list)} labels array(s); give one "
            "labels array per image."
        )
    n_outputs = model_config.n_classes
    planes: list[TrainingPlane] = []
    painted_planes: list[np.ndarray] = []
    for number, (image, labels) in enumerate(zip(image_list, labels_list, strict=True)):
        where = f"image {number}" if len(image_list) > 1 else "the image"
        layout = resolve_layout(image, model_config.in_channels, axes)
        labels = check_labels_dtype(np.asarray(labels))
        if labels.shape != layout.output_shape:
            raise InputError(
                f"the labels have shape {labels.shape} but {where} has shape {layout.shape} "
                f"(axes {layout.axes}), so labels of shape {layout.output_shape} are needed. "
                "Paint on a Labels layer made for this image."
            )
        if min(layout.plane_shape) < model_config.min_size:
            raise InputError(
                f"{where} is {layout.plane_shape[0]}x{layout.plane_shape[1]} px; this model (depth "
                f"{model_config.depth}) needs at least {model_config.min_size}x{model_config.min_size} px."
            )
        normalizer: Normalizer | None = None
        for index in layout.plane_indices():
            plane_labels = labels[index]
            if not plane_labels.any():
                continue  # an unpainted plane of a stack teaches nothing
            if normalizer is None:
                normalizer = fit_normalizer(image, layout, normalization_config)
            raw = layout.read_plane(image, index)
            check_finite(raw, where)
            targets = make_targets(plane_labels, train_config, n_outputs)
            painted_planes.append(plane_labels)
            planes.append(
                TrainingPlane(
                    image=normalizer(raw),
                    classes=targets.classes,
                    train_mask=targets.mask.copy(),
                    validation_mask=np.zeros_like(targets.mask),
                )
            )
    check_painted_classes(painted_planes, train_config, n_outputs)
    return planes


def split_validation(
    planes: list[TrainingPlane],
    fraction: float,
    block: int,
    rng: np.random.Generator,
    n_classes: int,
) -> None:
    """Move whole square regions of paint to validation until ``fraction`` of it is held out.

    Regions, not single pixels, are held out so validation pixels are not the immediate
    neighbours of training pixels. No class loses more than half its paint.
    """
    total = sum(int(p.train_mask.sum()) for p in planes)
    if fraction <= 0 or total < MIN_PIXELS_FOR_VALIDATION:
        return
    class_totals = np.zeros(n_classes, np.int64)
    regions = []
    for number, plane in enumerate(planes):
        counts_all = np.bincount(plane.classes[plane.train_mask], minlength=n_classes)
        class_totals += counts_all[:n_classes]
        ny, nx = plane.classes.shape
        for y in range(0, ny, block):
            for x in range(0, nx, block):
                window = (slice(y, y + block), slice(x, x + block))
                mask = plane.train_mask[window]
                if mask.any():
                    counts = np.bincount(plane.classes[window][mask], minlength=n_classes)[
                        :n_classes
                    ]
                    regions.append((number, window, counts))
    held = np.zeros(n_classes, np.int64)
    for i in rng.permutation(len(regions)):
        if held.sum() >= fraction * total:
            break
        number, window, counts = regions[i]
        if np.any(held + counts > class_totals // 2):
            continue
        plane = planes[number]
        plane.validation_mask[window] = plane.train_mask[window]
        plane.train_mask[window] = False
        held += counts


class PatchSampler:
    """Random patches centred near painted pixels, classes drawn evenly, augmented in torch."""

    def __init__(
        self, planes: list[TrainingPlane], patch_size: int, n_classes: int, rng: np.random.Generator
    ) -> None:
        self.patch = patch_size
        self.rng = rng
        pad = patch_size // 2
        self.pad = pad
        self.images = [
            np.pad(p.image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect") for p in planes
        ]
        self.classes = [np.pad(p.classes, pad) for p in planes]
        self.masks = [np.pad(p.train_mask, pad) for p in planes]
        self.centres: list[np.ndarray] = []
        for c in range(n_classes):
            found = [
                np.column_stack([np.full(len(ys), i), ys, xs])
                for i, p in enumerate(planes)
                for ys, xs in [np.nonzero(p.train_mask & (p.classes == c))]
            ]
            centres = np.concatenate(found) if found else np.empty((0, 3), np.int64)
            if len(centres) > MAX_CENTRES_PER_CLASS:
                centres = centres[rng.choice(len(centres), MAX_CENTRES_PER_CLASS, replace=False)]
            if len(centres):
                self.centres.append(centres)

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, half = self.patch, self.patch // 2
        channels = self.images[0].shape[0]
        x = np.empty((batch_size, channels, p, p), np.float32)
        y = np.empty((batch_size, p, p), np.int64)
        m = np.empty((batch_size, p, p), np.float32)
        for b in range(batch_size):
            centres = self.centres[self.rng.integers(len(self.centres))]
            plane, cy, cx = centres[self.rng.integers(len(centres))]
            image = self.images[plane]
            jitter = self.rng.integers(-half // 2, half // 2 + 1, size=2)
            top = int(np.clip(cy + self.pad - half + jitter[0], 0, image.shape[1] - p))
            left = int(np.clip(cx + self.pad - half + jitter[1], 0, image.shape[2] - p))
            window = (slice(top, top + p), slice(left, left + p))
            x[b] = image[(slice(None), *window)]
            y[b] = self.classes[plane][window]
            m[b] = self.masks[plane][window]
        return x, y, m


def augment(
    x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, jitter: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random flips, 90 degree turns and intensity scale/shift, the same geometry for all three."""
    n = x.shape[0]
    draws = torch.rand(n, 3, generator=generator)
    for i in range(n):
        dims_x, dims_y = [], []
        if draws[i, 0] < 0.5:
            dims_x.append(2)
            dims_y.append(1)
        if draws[i, 1] < 0.5:
            dims_x.append(3)
            dims_y.append(2)
        if dims_x:
            x[i] = x[i].flip([d - 1 for d in dims_x])
            y[i] = y[i].flip([d - 1 for d in dims_y])
            m[i] = m[i].flip([d - 1 for d in dims_y])
        if draws[i, 2] < 0.5:
            x[i] = x[i].rot90(1, (1, 2))
            y[i] = y[i].rot90(1, (0, 1))
            m[i] = m[i].rot90(1, (0, 1))
    if jitter > 0:
        scale = 1 + jitter * (2 * torch.rand(n, x.shape[1], 1, 1, generator=generator) - 1)
        shift = jitter * (2 * torch.rand(n, x.shape[1], 1, 1, generator=generator) - 1)
        x = x * scale + shift
    return x, y, m


@dataclass
class ValidationRegion:
    image: torch.Tensor
    classes: np.ndarray
    mask: np.ndarray


def validation_regions(
    planes: list[TrainingPlane], block: int, min_size: int, rng: np.random.Generator
) -> list[ValidationRegion]:
    """Crops around held-out regions, with context, padded to the network's size multiple."""
    found = []
    for plane in planes:
        ny, nx = plane.classes.shape
        for y in range(0, ny, block):
            for x in range(0, nx, block):
                if plane.validation_mask[y : y + block, x : x + block].any():
                    found.append((plane, y, x))
    if len(found) > MAX_VALIDATION_REGIONS:
        found = [
            found[i] for i in sorted(rng.choice(len(found), MAX_VALIDATION_REGIONS, replace=False))
        ]
    regions = []
    for plane, y, x in found:
        ny, nx = plane.classes.shape
        y0, x0 = max(0, y - VALIDATION_MARGIN), max(0, x - VALIDATION_MARGIN)
        y1, x1 = min(ny, y + block + VALIDATION_MARGIN), min(nx, x + block + VALIDATION_MARGIN)
        mask = np.zeros((y1 - y0, x1 - x0), bool)
        inner = (slice(y - y0, y - y0 + block), slice(x - x0, x - x0 + block))
        mask[inner] = plane.validation_mask[y : y + block, x : x + block]
        crop = plane.image[:, y0:y1, x0:x1]
        pad_y, pad_x = (-crop.shape[1]) % min_size, (-crop.shape[2]) % min_size
        crop = np.pad(crop, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
        regions.append(
            ValidationRegion(
                torch.from_numpy(np.ascontiguousarray(crop)), plane.classes[y0:y1, x0:x1], mask
            )
        )
    return regions


def foreground_dice(
    predicted: np.ndarray, target: np.ndarray, objects: bool, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per foreground class: (intersection, predicted + target sizes); objects merge all foreground."""
    if objects:
        p, t = predicted > 0, target > 0
        return np.array([np.sum(p & t)]), np.array([np.sum(p) + np.sum(t)])
    classes = range(1, max(n_classes, 2))
    inter = np.array([np.sum((predicted == c) & (target == c)) for c in classes])
    sizes = np.array([np.sum(predicted == c) + np.sum(target == c) for c in classes])
    return inter, sizes


def evaluate(
    model: nn.Module,
    regions: list[ValidationRegion],
    device: torch.device,
    objects: bool,
    n_outputs: int,
) -> float | None:
    if not regions:
        return None
    n_fg = 1 if objects else max(n_outputs, 2) - 1
    inter, sizes = np.zeros(n_fg), np.zeros(n_fg)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for region in regions:
                logits = model(region.image[None].to(device))[0].float().cpu()
                h, w = region.mask.shape
                logits = logits[:, :h, :w]
                pred = (logits[0] > 0).long() if n_outputs == 1 else logits.argmax(0)
                pred_np = pred.numpy()
                i, s = foreground_dice(
                    pred_np[region.mask], region.classes[region.mask], objects, n_outputs
                )
                inter += i
                sizes += s
    finally:
        model.train(was_training)
    scored = sizes > 0
    if not scored.any():
        return None
    return float(np.mean(2 * inter[scored] / sizes[scored]))


# --------------------------------------------------------------------------- the loop


def learning_rate_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 0.05)
    span = max(1e-9, 1 - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / span)))


@in_a_job
def train_iter(
    model: nn.Module,
    model_config: ModelConfig,
    planes: list[TrainingPlane],
    config: TrainConfig,
    device: torch.device,
    stop: threading.Event | None = None,
    on_finish: Callable[[TrainingHistory], None] | None = None,
) -> Generator[TrainingEvent, None, TrainingHistory]:
    """Train ``model`` in place; yields events, returns the history, keeps the best weights."""
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n_outputs = model_config.n_classes
    n_classes = max(n_outputs, 2)
    loss_name = resolve_loss_name(config.loss, n_outputs)

    split_validation(planes, config.validation_fraction, config.validation_block, rng, n_classes)
    largest = max(max(p.classes.shape) for p in planes)
    patch = min(
        config.patch_size, int(math.ceil(largest / model_config.min_size) * model_config.min_size)
    )
    patch = max(patch, model_config.min_size)
    sampler = PatchSampler(planes, patch, n_classes, rng)
    regions = validation_regions(planes, config.validation_block, model_config.min_size, rng)

    model.to(device)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    # Mixed precision: float16 with loss scaling on CUDA, bfloat16 on CPUs that compute it natively.
    use_amp = config.mixed_precision and (
        device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())
    )
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device.type == "cuda")
    pin = device.type == "cuda"

    history = TrainingHistory(device=str(device))
    best_state: dict[str, torch.Tensor] | None = None
    best_score = -math.inf
    epoch_losses: list[float] = []

    def elapsed() -> float:
        return time.perf_counter() - start

    def progress() -> float:
        done = []
        if config.max_seconds is not None:
            done.append(elapsed() / config.max_seconds)
        if config.max_epochs is not None:
            done.append(history.steps / (config.max_epochs * config.steps_per_epoch))
        return min(1.0, max(done))

    def remaining() -> float | None:
        fraction = progress()
        if fraction <= 0:
            return config.max_seconds
        return max(0.0, elapsed() * (1 - fraction) / fraction)

    def end_epoch() -> EpochDone:
        nonlocal best_state, best_score, epoch_losses
        mean_loss = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
        epoch_losses = []
        dice = evaluate(model, regions, device, config.is_objects, n_outputs)
        history.epoch_losses.append(mean_loss)
        history.validation_dice.append(dice)
        score = dice if dice is not None else -mean_loss
        improved = score >= best_score
        if improved:
            best_score = score
            best_state = copy.deepcopy(model.state_dict())
            history.best_epoch = history.epochs
            history.best_validation_dice = dice
        return EpochDone(
            epoch=history.epochs,
            step=history.steps,
            train_loss=mean_loss,
            validation_dice=dice,
            best_validation_dice=history.best_validation_dice,
            improved=improved,
            elapsed=elapsed(),
            remaining=remaining(),
        )

    try:
        yield TrainingStarted(
            device=str(device),
            n_planes=len(planes),
            train_pixels=int(sum(p.train_mask.sum() for p in planes)),
            validation_pixels=int(sum(p.validation_mask.sum() for p in planes)),
            patch_size=patch,
            steps_per_epoch=config.steps_per_epoch,
            max_seconds=config.max_seconds,
            max_epochs=config.max_epochs,
        )
        while True:
            if stop is not None and stop.is_set():
                history.stop_reason = "stopped"
                break
            if config.max_seconds is not None and elapsed() >= config.max_seconds:
                history.stop_reason = "time"
                break
            if config.max_epochs is not None and history.epochs >= config.max_epochs:
                history.stop_reason = "epochs"
                break
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * learning_rate_factor(
                    progress(), config.warmup_fraction
                )
            xb, yb, mb = (torch.from_numpy(a) for a in sampler.sample(config.batch_size))
            if config.augment:
                xb, yb, mb = augment(xb, yb, mb, config.intensity_jitter, generator)
            if pin:
                xb, yb, mb = xb.pin_memory(), yb.pin_memory(), mb.pin_memory()
            xb = xb.to(device, non_blocking=pin)
            yb = yb.to(device, non_blocking=pin)
            mb = mb.to(device, non_blocking=pin)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(xb)
            loss = masked_loss(loss_name, logits.float(), yb, mb)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach())
            history.step_losses.append(value)
            epoch_losses.append(value)
            history.steps += 1
            yield StepDone(
                step=history.steps,
                epoch=history.epochs + 1,
                loss=value,
                learning_rate=optimizer.param_groups[0]["lr"],
                elapsed=elapsed(),
                remaining=remaining(),
            )
            if history.steps % config.steps_per_epoch == 0:
                yield end_epoch()
        if epoch_losses:  # score the last, partial epoch too
            yield end_epoch()
    except GeneratorExit:
        history.stop_reason = "stopped"
        raise
    finally:
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        history.elapsed = elapsed()
        if on_finish is not None:
            on_finish(history)
    yield TrainingDone(history)
    return history


def consume(
    events: Generator[TrainingEvent, None, TrainingHistory], progress_bar: bool = True
) -> TrainingHistory:
    """Run a training generator to the end, with a tqdm progress bar on stderr if asked."""
    bar = None
    best: float | None = None
    try:
        for event in events:
            if isinstance(event, TrainingDone):
                return event.history
            if not progress_bar:
                continue
            if isinstance(event, TrainingStarted):
                from tqdm.auto import tqdm

                bar = tqdm(total=100, desc="training", bar_format=_BAR_FORMAT)
            elif isinstance(event, StepDone | EpochDone) and bar is not None:
                left = event.remaining or 0.0
                bar.n = round(100 * event.elapsed / max(event.elapsed + left, 1e-9), 1)
                loss = event.loss if isinstance(event, StepDone) else event.train_loss
                postfix = {"loss": f"{loss:.3f}"}
                if isinstance(event, EpochDone):
                    best = event.best_validation_dice
                if best is not None:
                    postfix["best val Dice"] = f"{best:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    raise RuntimeError("training ended without a result")  # pragma: no cover


_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"
