"""Training on painted labels, as a generator of small typed events.

The events and the history are in :mod:`.training_events`; turning painted images into
training planes is in :mod:`.planes`.

The generator runs one optimiser step between events, so a caller stops it cleanly by
closing it (or setting ``stop``); the best weights are kept either way.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Generator

import numpy as np
import torch
from torch import nn

from .allocator import in_a_job
from .config import ModelConfig, TrainConfig
from .devices import cpu_has_native_bfloat16
from .errors import UnetSegError
from .losses import masked_loss, resolve_loss_name
from .planes import prepare_planes
from .prior import class_share_shift, estimate_pixels, shift_output_bias
from .sampling import PatchSampler, TrainingPlane, augment
from .threads import ThreadTuner
from .training_events import (
    MIN_TRUSTED_STEPS,
    EpochDone,
    PaintUpdated,
    StepDone,
    TrainingDone,
    TrainingEvent,
    TrainingHistory,
    TrainingStarted,
)
from .validation import (
    ValidationRegion,
    ValidationSplit,
    evaluate,
    split_validation,
    validation_regions,
)

__all__ = [
    "EpochDone",
    "PaintUpdated",
    "StepDone",
    "TrainingDone",
    "TrainingHistory",
    "TrainingPlane",
    "TrainingStarted",
    "consume",
    "prepare_planes",
    "split_validation",
    "train_iter",
]

#: Validated epochs before this share of the budget do not compete for "best": early in a
#: run, a nearly empty model can score well on the few held-out strokes.
BEST_FROM_PROGRESS = 0.5
#: Class shares that lower the held-out Dice by more than this are applied in part, or not.
#: A safety net against a broken estimate, not a judge of a good one: held-out strokes lie
#: away from the borders the shares move. On the real images, the full shift beat half of it
#: in 3 of 4 image-painting pairs measured (and was 0.002 behind in the 4th).
SHARES_TOLERANCE = 0.10
#: The shares of the bias shift tried, largest first.
SHARES_STEPS = (1.0, 0.5, 0.25)
#: In the first part of a run, epochs are validated only while validation has taken less
#: than this share of the time: those scores are shown, not used to choose weights.
VALIDATION_TIME_SHARE = 0.05


def learning_rate_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 0.05)
    span = max(1e-9, 1 - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / span)))


class BestWeights:
    """The weights a run keeps: the best validated ones once training is under way.

    Candidates are epochs validated in the second half of the budget, the final weights, and
    the starting weights of a fine-tune. Ties go to the later weights. Without validation
    the final weights are kept.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.state: dict[str, torch.Tensor] | None = None
        self.score = -math.inf
        self.epoch: int | None = None
        self.dice: float | None = None

    def offer(self, dice: float | None, epoch: int, eligible: bool) -> bool:
        if dice is None or not eligible or dice < self.score:
            return False
        self.state = copy.deepcopy(self.model.state_dict())
        self.score, self.epoch, self.dice = dice, epoch, dice
        return True

    def restore(self) -> None:
        if self.state is not None:
            self.model.load_state_dict(self.state)


@in_a_job
def train_iter(
    model: nn.Module,
    model_config: ModelConfig,
    planes: list[TrainingPlane],
    config: TrainConfig,
    device: torch.device,
    stop: threading.Event | None = None,
    on_finish: Callable[[TrainingHistory], None] | None = None,
    start_is_candidate: bool = False,
    refresh: Callable[[], list[TrainingPlane] | None] | None = None,
    until_stopped: bool = False,
    notes: list[str] | None = None,
) -> Generator[TrainingEvent, None, TrainingHistory]:
    """Train ``model`` in place; yields events, returns the history, keeps the best weights.

    ``start_is_candidate``: the starting weights were trained before (a fine-tune), so they
    compete with the new ones and a bad fine-tune cannot replace a better model.

    ``refresh`` is called after every epoch: new planes (the paint changed) replace the old
    ones, with a fresh validation split, and a :class:`PaintUpdated` event follows; None
    keeps them. An :class:`~napari_unetseg.core.errors.UnetSegError` it raises is reported in
    that event and the old planes stay. ``until_stopped`` ignores the budget: training runs
    until ``stop`` or ``close()``, at the full learning rate after a one-epoch warm-up, and
    keeps its final weights. ``notes`` about the paint are warnings from the start: they come
    in :class:`TrainingStarted` and in the history's warnings.
    """
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n_outputs = model_config.n_classes
    n_classes = max(n_outputs, 2)
    loss_name = resolve_loss_name(config.loss, n_outputs)

    volumes = model_config.spatial_dims == 3
    batch_size = config.volume_batch_size if volumes else config.batch_size
    base_rate = config.volume_learning_rate if volumes else config.learning_rate
    split, patch, patch_pixels, sampler, regions = _arrange(
        planes, config, model_config, rng, n_classes
    )

    model.to(device)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=base_rate, weight_decay=config.weight_decay
    )
    # Mixed precision: float16 with loss scaling on CUDA, bfloat16 on CPUs that compute it natively.
    use_amp = config.mixed_precision and (
        device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())
    )
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    eval_dtype = amp_dtype if use_amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device.type == "cuda")
    pin = device.type == "cuda"
    tuner = ThreadTuner(config.threads) if device.type == "cpu" else None
    # The clock starts here: a process's first optimiser imports torch._dynamo (seconds).
    start = time.perf_counter()

    history = TrainingHistory(device=str(device))
    history.warnings += notes or []
    if split.reason and config.validation_fraction > 0:
        history.warnings.append(split.reason)
    best = BestWeights(model)
    epoch_losses: list[float] = []
    finish = FinishEstimate(
        region_pixels=sum(r.mask.size for r in regions),
        share_pixels=estimate_pixels(planes) if config.correct_class_shares else 0,
        step_pixels=3 * batch_size * patch_pixels,
    )

    def elapsed() -> float:
        return time.perf_counter() - start

    def training_seconds() -> float | None:
        """The time budget less what scoring and the class shares will take at the end."""
        if config.max_seconds is None:
            return None
        return max(0.5 * config.max_seconds, config.max_seconds - finish.seconds())

    def progress() -> float:
        if until_stopped:
            return 0.0  # no budget: no epoch but the last competes for "best"
        done = []
        budget = training_seconds()
        if budget is not None:
            done.append(elapsed() / budget)
        if config.max_epochs is not None:
            done.append(history.steps / (config.max_epochs * config.steps_per_epoch))
        return min(1.0, max(done))

    def remaining() -> float | None:
        if until_stopped:
            return None
        fraction = progress()
        if fraction <= 0:
            return config.max_seconds
        return max(0.0, elapsed() * (1 - fraction) / fraction)

    def held_out_dice() -> float | None:
        score = evaluate(model, regions, device, config.is_objects, n_outputs, eval_dtype)
        return None if score is None else score.dice

    def timed_evaluate() -> float | None:
        began = time.perf_counter()
        score = evaluate(model, regions, device, config.is_objects, n_outputs, eval_dtype)
        finish.validated(time.perf_counter() - began)
        if score is None:
            return None
        if score.wrong:
            history.all_right_from = None
        elif history.all_right_from is None:
            history.all_right_from = history.epochs + 1
        return score.dice

    def score_epoch(final: bool) -> tuple[float, float | None, bool]:
        nonlocal epoch_losses
        mean_loss = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
        epoch_losses = []
        eligible = final or progress() >= BEST_FROM_PROGRESS
        affordable = finish.validation_seconds <= VALIDATION_TIME_SHARE * elapsed()
        dice = timed_evaluate() if eligible or affordable else None
        history.epoch_losses.append(mean_loss)
        history.validation_dice.append(dice)
        improved = best.offer(dice, history.epochs, eligible)
        if improved:
            history.best_epoch, history.best_validation_dice = best.epoch, best.dice
        return mean_loss, dice, improved

    def end_epoch(final: bool = False) -> EpochDone:
        mean_loss, dice, improved = score_epoch(final)
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

    def offer_final() -> None:
        """Stopped right after an epoch: its weights are the final ones, and they compete."""
        if not history.validation_dice:
            return
        if history.validation_dice[-1] is None and regions:  # its scoring was skipped
            history.validation_dice[-1] = timed_evaluate()
        if best.offer(history.validation_dice[-1], history.epochs, True):
            history.best_epoch, history.best_validation_dice = best.epoch, best.dice

    def correct_shares() -> None:
        """Fold the image's class shares into the output bias, as far as held-out paint allows."""
        estimate = class_share_shift(
            model,
            planes,
            model_config.multiples,
            device,
            rng,
            eval_dtype,
            align_borders=config.align_borders,
        )
        if estimate is None:
            return
        shares, shift, border_shift = estimate

        def record(fraction: float) -> None:
            history.class_shares = [round(float(v), 4) for v in shares]
            history.class_shares_applied = fraction
            history.border_shift = fraction * border_shift

        # the kept weights were scored when they were chosen; others are scored now
        before = best.dice if best.state is not None else held_out_dice()
        if before is None:  # nothing to check against
            shift_output_bias(model, shift)
            record(1.0)
            return
        applied = 0.0
        for fraction in SHARES_STEPS:
            shift_output_bias(model, (fraction - applied) * shift)
            applied = fraction
            after = held_out_dice()
            if after is not None and after >= before - SHARES_TOLERANCE:
                record(fraction)
                return
        shift_output_bias(model, -applied * shift)
        history.warnings.append(
            "the class shares estimated from the image made the held-out paint score worse, "
            "so they were not applied."
        )

    def rate_factor() -> float:
        if until_stopped:  # warm up over the first epoch, then the full rate
            return min(1.0, max(0.05, history.steps / config.steps_per_epoch))
        return learning_rate_factor(progress(), config.warmup_fraction)

    def take_new_paint() -> PaintUpdated | None:
        """Planes from ``refresh``, when the paint changed; the best-weights race restarts."""
        nonlocal planes, split, patch, sampler, regions, best
        if refresh is None:
            return None
        problem = None
        try:
            fresh = refresh()
        except UnetSegError as error:
            fresh, problem = None, str(error)
        if fresh is not None:
            planes = fresh
            split, patch, _, sampler, regions = _arrange(
                planes, config, model_config, rng, n_classes
            )
            finish.paint_changed(
                region_pixels=sum(r.mask.size for r in regions),
                share_pixels=estimate_pixels(planes) if config.correct_class_shares else 0,
            )
            history.all_right_from = None
            best = BestWeights(model)  # scores on the old paint do not compare
            history.best_epoch = history.best_validation_dice = None
            history.paint_updates += 1
        elif problem is None:
            return None
        return PaintUpdated(
            epoch=history.epochs,
            step=history.steps,
            train_pixels=int(sum(p.train_mask.sum() for p in planes)),
            validation_pixels=int(sum(p.validation_mask.sum() for p in planes)),
            problem=problem,
        )

    def step() -> float:
        for group in optimizer.param_groups:
            group["lr"] = base_rate * rate_factor()
        xb, yb, mb = (torch.from_numpy(a) for a in sampler.sample(batch_size))
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
        return float(loss.detach())

    try:
        if start_is_candidate and regions:
            history.start_validation_dice = timed_evaluate()
            if best.offer(history.start_validation_dice, 0, True):
                history.best_epoch, history.best_validation_dice = 0, best.dice
            model.train()
        yield TrainingStarted(
            device=str(device),
            n_planes=len(planes),
            train_pixels=int(sum(p.train_mask.sum() for p in planes)),
            validation_pixels=int(sum(p.validation_mask.sum() for p in planes)),
            patch_size=patch,
            steps_per_epoch=config.steps_per_epoch,
            max_seconds=config.max_seconds,
            max_epochs=config.max_epochs,
            validation_note=split.reason,
            paint_notes=tuple(notes or ()),
        )
        while True:
            if stop is not None and stop.is_set():
                history.stop_reason = "stopped"
                break
            budget = not until_stopped
            seconds = training_seconds()
            if budget and seconds is not None and elapsed() >= seconds:
                history.stop_reason = "time"
                break
            if budget and config.max_epochs is not None and history.epochs >= config.max_epochs:
                history.stop_reason = "epochs"
                break
            if tuner is not None:
                tuner.before_step()
            began = time.perf_counter()
            value = step()
            took = time.perf_counter() - began
            finish.stepped(took)
            if tuner is not None:
                tuner.after_step(took)
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
                update = take_new_paint()
                if update is not None:
                    yield update
                    model.train()
        if epoch_losses:  # score the last, partial epoch too
            yield end_epoch(final=True)
        else:
            offer_final()
    except BaseException as error:
        stopped = isinstance(error, GeneratorExit | KeyboardInterrupt)
        history.stop_reason = "stopped" if stopped else "error"
        if stopped and epoch_losses:
            score_epoch(final=True)  # weights stopped mid-epoch are validated too
        elif stopped:
            offer_final()
        raise
    finally:
        if tuner is not None:
            history.threads = tuner.current
            tuner.restore()
        _finish(history, best, model)
        if volumes and history.steps > 0 and str(history.stop_reason) != "error":
            recalibrate_batch_norm(model, sampler, batch_size, device)
        if config.correct_class_shares and history.trustworthy:
            correct_shares()
        history.elapsed = elapsed()
        if on_finish is not None:
            on_finish(history)
    yield TrainingDone(history)
    return history


#: The search for the brightness step (:mod:`.borders`) per class-share pixel: 0.47 s for a
#: million pixels measured on a 2-core CPU, doubled. It runs on the CPU whatever the device.
BORDER_SECONDS_PER_PIXEL = 1e-6


class FinishEstimate:
    """How long the end of a run takes (the last validation, the class shares, the border
    step and their check), from the measured cost of a forward pass per pixel, so the run
    fits its budget."""

    def __init__(self, region_pixels: int, share_pixels: int, step_pixels: int) -> None:
        self.region_pixels = region_pixels
        self.share_pixels = share_pixels
        self.step_pixels = step_pixels  # a step is about three forward passes of the batch
        self.validation_seconds = 0.0
        self.seconds_per_pixel: float | None = None
        self._from_validation = False

    def paint_changed(self, region_pixels: int, share_pixels: int) -> None:
        """New paint: new amounts to score; the measured cost per pixel still holds."""
        self.region_pixels, self.share_pixels = region_pixels, share_pixels

    def validated(self, seconds: float) -> None:
        self.validation_seconds += seconds
        if self.region_pixels:
            rate = seconds / self.region_pixels
            old = self.seconds_per_pixel if self._from_validation else None
            self.seconds_per_pixel = rate if old is None else 0.5 * old + 0.5 * rate
            self._from_validation = True

    def stepped(self, seconds: float) -> None:
        if not self._from_validation:
            rate = seconds / self.step_pixels
            old = self.seconds_per_pixel
            self.seconds_per_pixel = rate if old is None else 0.8 * old + 0.2 * rate

    def seconds(self) -> float:
        if self.seconds_per_pixel is None:
            return 0.0
        checks = 2 if self.share_pixels and self.region_pixels else 1
        pixels = self.share_pixels + checks * self.region_pixels
        return self.seconds_per_pixel * pixels + BORDER_SECONDS_PER_PIXEL * self.share_pixels


def _arrange(
    planes: list[TrainingPlane],
    config: TrainConfig,
    model_config: ModelConfig,
    rng: np.random.Generator,
    n_classes: int,
) -> tuple[ValidationSplit, int, int, PatchSampler, list[ValidationRegion]]:
    """Hold out validation paint, and make the patch sampler and the validation regions:
    (split, patch side, pixels per patch, sampler, regions), for planes or volumes."""
    if model_config.spatial_dims == 3:
        from .volumes import split_volume_validation, volume_patch, volume_validation_regions

        split = split_volume_validation(
            planes, config.validation_fraction, config.validation_block, rng, n_classes
        )
        sides = volume_patch(planes, model_config, config)
        sampler = PatchSampler(planes, sides, n_classes, rng)
        regions = volume_validation_regions(
            planes, config.validation_block, model_config.multiples, sides[0], rng
        )
        return split, sides[-1], int(np.prod(sides)), sampler, regions
    split = split_validation(
        planes, config.validation_fraction, config.validation_block, rng, n_classes
    )
    patch = _patch_size(planes, config, model_config)
    sampler = PatchSampler(planes, patch, n_classes, rng)
    regions = validation_regions(planes, config.validation_block, model_config.min_size, rng)
    return split, patch, patch * patch, sampler, regions


def _patch_size(planes: list[TrainingPlane], config: TrainConfig, model_config: ModelConfig) -> int:
    """The training patch: ``config.patch_size``, or less for small planes (a multiple the model takes)."""
    multiple = model_config.min_size
    largest = max(max(p.classes.shape) for p in planes)
    patch = min(config.patch_size, int(math.ceil(largest / multiple) * multiple))
    return max(patch, multiple)


#: Batches of patches whose statistics replace the batch norm running averages of a 3-D model.
RECALIBRATION_BATCHES = 30


def recalibrate_batch_norm(
    model: nn.Module, sampler: PatchSampler, batch_size: int, device: torch.device
) -> None:
    """Batch norm statistics of the kept weights, averaged over fresh patches (no learning).

    A 3-D model trains on batches of two or so patches, and the running averages it keeps
    lag behind weights that change at every step; used as they are, they do not match the
    batches it learnt from. Measured on a noisy 31x61x57 nuclei stack painted on 3 planes
    (150 steps), Dice on the unpainted planes: 0.58 with the running averages, 0.86 with these.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    model.train()
    try:
        with torch.no_grad():
            for _ in range(RECALIBRATION_BATCHES):
                x, _, _ = sampler.sample(batch_size)
                model(torch.from_numpy(x).to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()


def _finish(history: TrainingHistory, best: BestWeights, model: nn.Module) -> None:
    """Keep the chosen weights, and say when the run is not to be trusted."""
    best.restore()
    model.eval()
    if history.steps == 0:
        history.warnings.append("no training step ran: the model is unchanged.")
    elif not history.trustworthy:
        history.warnings.append(
            f"only {history.steps} training steps ran, too few to trust the model "
            f"(at least {MIN_TRUSTED_STEPS} are needed). Was the computer busy? "
            "Train again with a longer time budget."
        )
    saturated = history.all_right_from
    if saturated is not None and saturated <= max(1, history.epochs // 2):
        history.warnings.append(
            f"every held-out painted pixel was right from epoch {saturated} on, so "
            "the validation Dice of 1.000 says only that the strokes are learned, not how good "
            "the borders are. Look at the result, and paint where it is wrong or unsure."
        )
    if best.epoch == 0 and history.steps > 0:
        history.warnings.append(
            "the new training scored worse than the model it started from, so the starting "
            "weights are kept."
        )


def wants_bar(progress: bool | None) -> bool:
    """A progress bar when asked (True), never (False), or on a terminal only (None)."""
    if progress is not None:
        return bool(progress)
    import sys

    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


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
