"""Training on painted labels, as a generator of small typed events.

The events and the history are in :mod:`.training_events`; turning painted images into
training planes is in :mod:`.planes`; the budget and learning rate in :mod:`.train_budget`;
the weights a run keeps in :mod:`.kept_weights`.

The generator runs one optimiser step between events, so a caller stops it cleanly by
closing it (or setting ``stop``); the best weights are kept either way.
"""

from __future__ import annotations

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
from .kept_weights import BestWeights, recalibrate_batch_norm
from .losses import masked_loss, resolve_loss_name
from .model import member_count, member_networks
from .planes import prepare_planes
from .prior import class_share_shift, estimate_pixels, shift_output_bias
from .sampling import PatchSampler, TrainingPlane, augment
from .threads import ThreadTuner
from .train_budget import FinishEstimate, TrainingClock
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
from .validation import ValidationScore, evaluate, split_validation, validation_regions

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


class _Run:
    """One training run: the paint arranged for training, the optimiser, the clock, the
    history and the weights it keeps. :func:`train_iter` drives it step by step."""

    def __init__(
        self,
        model: nn.Module,
        model_config: ModelConfig,
        planes: list[TrainingPlane],
        config: TrainConfig,
        device: torch.device,
        notes: list[str],
        until_stopped: bool,
    ) -> None:
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = model
        self.model_config = model_config
        self.config = config
        self.device = device
        self.n_outputs = model_config.n_classes
        self.loss_name = resolve_loss_name(config.loss, self.n_outputs)
        self.is_3d = model_config.spatial_dims == 3
        self.batch_size = config.volume_batch_size if self.is_3d else config.batch_size
        self.base_rate = config.volume_learning_rate if self.is_3d else config.learning_rate
        patch_pixels = self.arrange(planes)

        model.to(device)
        model.train()
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=self.base_rate, weight_decay=config.weight_decay
        )
        # Mixed precision: float16 with loss scaling on CUDA, bfloat16 on CPUs that compute
        # it natively.
        self.use_amp = config.mixed_precision and (
            device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())
        )
        self.amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.eval_dtype = self.amp_dtype if self.use_amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and device.type == "cuda")
        self.pin = device.type == "cuda"
        self.tuner = ThreadTuner(config.threads) if device.type == "cpu" else None

        self.history = TrainingHistory(device=str(device))
        self.history.warnings += notes
        if self.split.reason and config.validation_fraction > 0:
            self.history.warnings.append(self.split.reason)
        self.best = BestWeights(model)
        self.epoch_losses: list[float] = []
        self.finish = FinishEstimate(
            region_pixels=self.region_pixels(),
            share_pixels=self.share_pixels(),
            step_pixels=3 * self.batch_size * patch_pixels,
        )
        # The clock starts here: a process's first optimiser imports torch._dynamo (seconds).
        self.clock = TrainingClock(config, self.finish, until_stopped)

    # ------------------------------------------------------------------ paint

    def arrange(self, planes: list[TrainingPlane]) -> int:
        """Hold out validation paint, and make the patch sampler and the validation regions,
        for planes or volumes. Returns the pixels per patch."""
        config, model_config, rng = self.config, self.model_config, self.rng
        n_classes = max(self.n_outputs, 2)
        self.planes = planes
        if self.is_3d:
            from .volumes import split_volume_validation, volume_patch, volume_validation_regions

            self.split = split_volume_validation(
                planes, config.validation_fraction, config.validation_block, rng, n_classes
            )
            sides = volume_patch(planes, model_config, config)
            self.sampler = PatchSampler(planes, sides, n_classes, rng)
            self.regions = volume_validation_regions(
                planes, config.validation_block, model_config.multiples, sides[0], rng
            )
            self.patch = sides[-1]
            return int(np.prod(sides))
        self.split = split_validation(
            planes, config.validation_fraction, config.validation_block, rng, n_classes
        )
        self.patch = _patch_size(planes, config, model_config)
        self.sampler = PatchSampler(planes, self.patch, n_classes, rng)
        self.regions = validation_regions(
            planes, config.validation_block, model_config.min_size, rng
        )
        return self.patch * self.patch

    def region_pixels(self) -> int:
        """Pixels of the held-out regions scored after an epoch."""
        return sum(r.mask.size for r in self.regions)

    def share_pixels(self) -> int:
        return estimate_pixels(self.planes) if self.config.correct_class_shares else 0

    def paint_counts(self) -> tuple[int, int]:
        """(training, validation) painted pixels."""
        return (
            int(sum(p.train_mask.sum() for p in self.planes)),
            int(sum(p.validation_mask.sum() for p in self.planes)),
        )

    def take_new_paint(
        self, refresh: Callable[[], list[TrainingPlane] | None] | None
    ) -> PaintUpdated | None:
        """Planes from ``refresh``, when the paint changed; the best-weights race restarts."""
        if refresh is None:
            return None
        problem = None
        try:
            fresh = refresh()
        except UnetSegError as error:
            fresh, problem = None, str(error)
        history = self.history
        if fresh is not None:
            self.arrange(fresh)
            self.finish.paint_changed(
                region_pixels=self.region_pixels(),
                share_pixels=self.share_pixels(),
            )
            history.all_right_from = None
            self.best = BestWeights(self.model)  # scores on the old paint do not compare
            history.best_epoch = history.best_validation_dice = None
            history.paint_updates += 1
        elif problem is None:
            return None
        train_pixels, validation_pixels = self.paint_counts()
        return PaintUpdated(
            epoch=history.epochs,
            step=history.steps,
            train_pixels=train_pixels,
            validation_pixels=validation_pixels,
            problem=problem,
        )

    def started(self, notes: list[str]) -> TrainingStarted:
        train_pixels, validation_pixels = self.paint_counts()
        return TrainingStarted(
            device=str(self.device),
            n_planes=len(self.planes),
            train_pixels=train_pixels,
            validation_pixels=validation_pixels,
            patch_size=self.patch,
            steps_per_epoch=self.config.steps_per_epoch,
            max_seconds=self.config.max_seconds,
            max_epochs=self.config.max_epochs,
            validation_note=self.split.reason,
            paint_notes=tuple(notes),
            members=member_count(self.model),
        )

    # ------------------------------------------------------------------ steps

    def step(self) -> StepDone:
        """One optimiser step, timed for the thread tuner and the finish estimate."""
        if self.tuner is not None:
            self.tuner.before_step()
        began = time.perf_counter()
        value = self.optimise()
        took = time.perf_counter() - began
        self.finish.stepped(took)
        if self.tuner is not None:
            self.tuner.after_step(took)
        history = self.history
        history.step_losses.append(value)
        self.epoch_losses.append(value)
        history.steps += 1
        return StepDone(
            step=history.steps,
            epoch=history.epochs + 1,
            loss=value,
            learning_rate=self.optimizer.param_groups[0]["lr"],
            elapsed=self.clock.elapsed(),
            remaining=self.clock.remaining(history.steps),
        )

    def optimise(self) -> float:
        device, pin = self.device, self.pin
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_rate * self.clock.rate_factor(self.history.steps)
        xb, yb, mb = (torch.from_numpy(a) for a in self.sampler.sample(self.batch_size))
        if self.config.augment:
            xb, yb, mb = augment(xb, yb, mb, self.config.intensity_jitter, self.generator)
        if pin:
            xb, yb, mb = xb.pin_memory(), yb.pin_memory(), mb.pin_memory()
        xb = xb.to(device, non_blocking=pin)
        yb = yb.to(device, non_blocking=pin)
        mb = mb.to(device, non_blocking=pin)
        loss = self.backward(xb, yb, mb, self.use_amp)
        if not self.scaler.is_enabled():  # CUDA's float16 scaler skips such steps itself
            finite = _finite_gradients(self.model)
            if not finite and self.use_amp:
                # torch's bfloat16 3-D convolutions on CPU can return NaN weight gradients for
                # some shapes (a depth of 2 at 64 channels, torch 2.13): this batch again, in
                # float32
                loss = self.backward(xb, yb, mb, False)
                self.history.float32_retries += 1
                finite = _finite_gradients(self.model)
            if not finite:
                self.history.skipped_steps += 1  # the weights stay finite
                return loss
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    def backward(self, xb: torch.Tensor, yb: torch.Tensor, mb: torch.Tensor, amp: bool) -> float:
        """The loss on one batch, its gradients in the parameters' ``.grad``."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=amp):
            losses = member_losses(self.model, self.loss_name, xb, yb, mb)
        self.scaler.scale(losses.sum()).backward()
        return float(losses.detach().mean())

    # ------------------------------------------------------------------ validation

    def _score(self) -> ValidationScore | None:
        return evaluate(
            self.model,
            self.regions,
            self.device,
            self.config.is_objects,
            self.n_outputs,
            self.eval_dtype,
        )

    def held_out_dice(self) -> float | None:
        score = self._score()
        return None if score is None else score.dice

    def timed_evaluate(self) -> float | None:
        """The held-out Dice, its time counted, and whether every held-out pixel is right."""
        began = time.perf_counter()
        score = self._score()
        self.finish.validated(time.perf_counter() - began)
        if score is None:
            return None
        history = self.history
        if score.wrong:
            history.all_right_from = None
        elif history.all_right_from is None:
            history.all_right_from = history.epochs + 1
        return score.dice

    def offer(self, dice: float | None, epoch: int, eligible: bool) -> bool:
        improved = self.best.offer(dice, epoch, eligible)
        if improved:
            self.history.best_epoch = self.best.epoch
            self.history.best_validation_dice = self.best.dice
        return improved

    def offer_start(self) -> None:
        """A fine-tune's starting weights compete too."""
        self.history.start_validation_dice = self.timed_evaluate()
        self.offer(self.history.start_validation_dice, 0, True)
        self.model.train()

    def score_epoch(self, final: bool) -> tuple[float, float | None, bool]:
        history = self.history
        losses, self.epoch_losses = self.epoch_losses, []
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        eligible = final or self.clock.progress(history.steps) >= BEST_FROM_PROGRESS
        affordable = self.finish.validation_seconds <= VALIDATION_TIME_SHARE * self.clock.elapsed()
        dice = self.timed_evaluate() if eligible or affordable else None
        history.epoch_losses.append(mean_loss)
        history.validation_dice.append(dice)
        return mean_loss, dice, self.offer(dice, history.epochs, eligible)

    def end_epoch(self, final: bool = False) -> EpochDone:
        mean_loss, dice, improved = self.score_epoch(final)
        history = self.history
        return EpochDone(
            epoch=history.epochs,
            step=history.steps,
            train_loss=mean_loss,
            validation_dice=dice,
            best_validation_dice=history.best_validation_dice,
            improved=improved,
            elapsed=self.clock.elapsed(),
            remaining=self.clock.remaining(history.steps),
        )

    def offer_final(self) -> None:
        """Stopped right after an epoch: its weights are the final ones, and they compete."""
        scores = self.history.validation_dice
        if not scores:
            return
        if scores[-1] is None and self.regions:  # its scoring was skipped
            scores[-1] = self.timed_evaluate()
        self.offer(scores[-1], self.history.epochs, True)

    # ------------------------------------------------------------------ the end

    def wrap_up(self, stopped_early: bool) -> None:
        """Keep the chosen weights, calibrate them, and fold in the class shares.

        ``stopped_early``: closed or interrupted; the weights it stopped at compete too.
        """
        history = self.history
        if stopped_early and self.epoch_losses:
            self.score_epoch(final=True)  # weights stopped mid-epoch are validated too
        elif stopped_early:
            self.offer_final()
        if self.tuner is not None:
            history.threads = self.tuner.current
            self.tuner.restore()
        _finish(history, self.best, self.model)
        if self.is_3d and history.steps > 0 and str(history.stop_reason) != "error":
            recalibrate_batch_norm(self.model, self.sampler, self.batch_size, self.device)
        if self.config.correct_class_shares and history.trustworthy:
            self.correct_shares()
        history.elapsed = self.clock.elapsed()

    def correct_shares(self) -> None:
        """Fold the image's class shares into the output bias, as far as held-out paint allows."""
        model, history = self.model, self.history
        estimate = class_share_shift(
            model,
            self.planes,
            self.model_config.multiples,
            self.device,
            self.rng,
            self.eval_dtype,
            align_borders=self.config.align_borders,
        )
        if estimate is None:
            return
        candidates = [(estimate.shift, estimate.border_shift)]
        if estimate.grow_back is not None:
            candidates.append(estimate.grow_back)

        def record(fraction: float, border_shift: float) -> None:
            history.class_shares = [round(float(v), 4) for v in estimate.shares]
            history.class_shares_applied = fraction
            history.border_shift = fraction * border_shift
            history.wall_shift = fraction * estimate.wall_shift

        # the kept weights were scored when they were chosen; others are scored now
        before = self.best.dice if self.best.state is not None else self.held_out_dice()
        if before is None:  # nothing to check against
            shift_output_bias(model, estimate.shift)
            record(1.0, estimate.border_shift)
            return
        for shift, border_shift in candidates:
            applied = 0.0
            for fraction in SHARES_STEPS:
                shift_output_bias(model, (fraction - applied) * shift)
                applied = fraction
                after = self.held_out_dice()
                if after is not None and after >= before - SHARES_TOLERANCE:
                    record(fraction, border_shift)
                    return
            shift_output_bias(model, -applied * shift)
        history.warnings.append(
            "the class shares estimated from the image made the held-out paint score worse, "
            "so they were not applied."
        )


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
    start_shift: np.ndarray | None = None,
) -> Generator[TrainingEvent, None, TrainingHistory]:
    """Train ``model`` in place; yields events, returns the history, keeps the best weights.

    ``start_is_candidate``: the starting weights were trained before (a fine-tune), so they
    compete with the new ones and a bad fine-tune cannot replace a better model.
    ``start_shift``: the output-bias shift folded into them after their training (class
    shares, border step, the border moved by hand). It is taken out first, so that the
    fine-tune's own class shares are not folded in on top of it, and put back if no step runs.

    ``refresh`` is called after every epoch: new planes (the paint changed) replace the old
    ones, with a fresh validation split, and a :class:`PaintUpdated` event follows; None
    keeps them. An :class:`~napari_unetseg.core.errors.UnetSegError` it raises is reported in
    that event and the old planes stay. ``until_stopped`` ignores the budget: training runs
    until ``stop`` or ``close()``, at the full learning rate after a one-epoch warm-up, and
    keeps its final weights. ``notes`` about the paint are warnings from the start: they come
    in :class:`TrainingStarted` and in the history's warnings.
    """
    notes = list(notes or ())
    run = _Run(model, model_config, planes, config, device, notes, until_stopped)
    history = run.history
    stopped_early = False
    try:
        if start_shift is not None:
            shift_output_bias(model, -start_shift)
        if start_is_candidate and run.regions:
            run.offer_start()
        yield run.started(notes)
        while True:
            if stop is not None and stop.is_set():
                history.stop_reason = "stopped"
                break
            spent = run.clock.spent(history.epochs)
            if spent is not None:
                history.stop_reason = spent
                break
            yield run.step()
            if history.steps % config.steps_per_epoch == 0:
                yield run.end_epoch()
                update = run.take_new_paint(refresh)
                if update is not None:
                    yield update
                    model.train()
        if run.epoch_losses:  # score the last, partial epoch too
            yield run.end_epoch(final=True)
        else:
            run.offer_final()
    except BaseException as error:
        stopped_early = isinstance(error, GeneratorExit | KeyboardInterrupt)
        history.stop_reason = "stopped" if stopped_early else "error"
        raise
    finally:
        run.wrap_up(stopped_early)
        if start_shift is not None and history.steps == 0:  # nothing learnt: as it was
            shift_output_bias(model, start_shift)
        if on_finish is not None:
            on_finish(history)
    yield TrainingDone(history)
    return history


def member_losses(
    model: nn.Module, loss_name: str, xb: torch.Tensor, yb: torch.Tensor, mb: torch.Tensor
) -> torch.Tensor:
    """The loss of each member's logits on the batch (one entry for a plain network): each
    member fits the paint on its own, as if trained alone, and not their average."""
    outputs = [network(xb) for network in member_networks(model)]
    with torch.autocast(xb.device.type, enabled=False):  # the losses in float32
        return torch.stack([masked_loss(loss_name, out.float(), yb, mb) for out in outputs])


def _patch_size(planes: list[TrainingPlane], config: TrainConfig, model_config: ModelConfig) -> int:
    """The training patch: ``config.patch_size``, or less for small planes (a multiple the model takes)."""
    multiple = model_config.min_size
    largest = max(max(p.classes.shape) for p in planes)
    patch = min(config.patch_size, int(math.ceil(largest / multiple) * multiple))
    return max(patch, multiple)


def _finite_gradients(model: nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def _finish(history: TrainingHistory, best: BestWeights, model: nn.Module) -> None:
    """Keep the chosen weights, and say when the run is not to be trusted."""
    best.restore()
    model.eval()
    if history.skipped_steps:
        history.warnings.append(
            f"{history.skipped_steps} of {history.steps} training steps gave gradients that were "
            "not finite numbers and were skipped. If that is many, the training is diverging: "
            "train again with a lower learning rate."
        )
    if history.steps == 0:
        history.warnings.append("no training step ran: the model is unchanged.")
    elif not history.trustworthy:
        history.warnings.append(
            f"only {history.steps} training steps ran, too few to trust the model "
            f"(at least {MIN_TRUSTED_STEPS} are needed). Was the computer busy? "
            "Train again with a longer time budget."
        )
    if history.validation_saturated:
        history.warnings.append(
            f"every held-out painted pixel was right from epoch {history.all_right_from} on, so "
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
