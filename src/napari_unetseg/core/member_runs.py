"""A new model of several members, trained one member after the other.

Each member gets a run of its own (:func:`~napari_unetseg.core.train.train_iter`) from its
own seed: its own held-out paint, patches, class shares and border. A member after the first
is trained only when the run before it reached its epoch cap with at least as much time left
in the budget as that run took, so a slow machine gets one member trained as far as one
alone would be. The model then averages the members that were trained.

Two runs averaged beat one on the real nuclei stacks and tied on the membranes, where two
members trained side by side on the same patches did not (docs/benchmarks.md, twenty-second session).

The events of the runs are joined into one stream, numbered as one training: steps, epochs
and seconds go on from the previous run, and the time left counts the runs still planned.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Generator
from typing import cast

import numpy as np
import torch
from torch import nn

from .config import ModelConfig, TrainConfig
from .prior import folded_shift, shift_output_bias
from .sampling import TrainingPlane
from .train import train_iter
from .training_events import (
    EpochDone,
    PaintUpdated,
    StepDone,
    TrainingDone,
    TrainingEvent,
    TrainingHistory,
    TrainingStarted,
)


@dataclasses.dataclass
class _Offset:
    """Where the next run's numbering starts."""

    steps: int = 0
    epochs: int = 0
    seconds: float = 0.0


def _renumbered(event: TrainingEvent, offset: _Offset, runs_after: int) -> TrainingEvent:
    """``event`` numbered from ``offset``; its time left counts ``runs_after`` more runs as
    long as this one."""
    if isinstance(event, StepDone | EpochDone):
        remaining = event.remaining
        if remaining is not None and runs_after:
            remaining += runs_after * (event.elapsed + remaining)
        return dataclasses.replace(
            event,
            step=event.step + offset.steps,
            epoch=event.epoch + offset.epochs,
            elapsed=event.elapsed + offset.seconds,
            remaining=remaining,
        )
    if isinstance(event, PaintUpdated):
        return dataclasses.replace(
            event, step=event.step + offset.steps, epoch=event.epoch + offset.epochs
        )
    return event


def unsplit(planes: list[TrainingPlane]) -> list[TrainingPlane]:
    """The planes with masks of their own: a run holds out its validation paint by changing
    the masks, and each run holds out its own."""
    return [
        dataclasses.replace(
            plane, train_mask=plane.train_mask.copy(), validation_mask=plane.validation_mask.copy()
        )
        for plane in planes
    ]


def another_run_fits(history: TrainingHistory, spent: float, max_seconds: float | None) -> bool:
    """The next member is trained when this run ended at its epoch cap (not stopped, not out
    of time) and the budget has as much time left as this run took."""
    if history.stop_reason != "epochs" or not history.trustworthy:
        return False  # stopped, out of time, or too short to be trusted
    return max_seconds is None or max_seconds - spent >= history.elapsed


def train_members_in_turn(
    model: nn.Module,
    model_config: ModelConfig,
    planes: list[TrainingPlane],
    config: TrainConfig,
    device: torch.device,
    *,
    stop: threading.Event | None = None,
    on_finish: Callable[[TrainingHistory], None] | None = None,
    refresh: Callable[[], list[TrainingPlane] | None] | None = None,
    notes: list[str] | None = None,
) -> Generator[TrainingEvent, None, TrainingHistory]:
    """Train each of ``model.members`` in a run of its own, seeds ``config.seed``,
    ``config.seed + 1``, ...; the members not trained are dropped from the model.

    Yields the events of one training and returns a history of the runs together
    (:func:`joined_history`). ``on_finish`` gets it whether the runs end, are stopped or fail.
    """
    members = list(cast(nn.ModuleList, model.members))
    latest = [planes]  # unsplit: each run is given a copy of their masks

    def refresh_latest() -> list[TrainingPlane] | None:
        fresh = refresh() if refresh is not None else None
        if fresh is not None:
            latest[0] = unsplit(fresh)
        return fresh

    histories: list[TrainingHistory] = []
    offset = _Offset()
    budget = config.max_seconds
    try:
        for index, member in enumerate(members):
            # until it is trained, a member stays out of the average (previews show the rest)
            model.members = nn.ModuleList(members[: index + 1])
            seconds = None if budget is None else budget - offset.seconds
            run = train_iter(
                member,
                model_config,
                unsplit(latest[0]),
                config.replace(seed=config.seed + index, max_seconds=seconds),
                device,
                stop=stop,
                on_finish=histories.append,  # also when the stream is closed mid-run
                refresh=refresh_latest if refresh is not None else None,
                notes=notes if index == 0 else None,
            )
            try:
                for event in run:
                    if isinstance(event, TrainingDone):
                        continue
                    if isinstance(event, TrainingStarted):
                        if index == 0:
                            yield dataclasses.replace(event, members=len(members))
                    else:
                        planned = len(members) - 1 - index
                        fits = budget is None or (
                            isinstance(event, StepDone | EpochDone)
                            and (1 + planned) * (event.elapsed + (event.remaining or 0)) <= budget
                        )
                        yield _renumbered(event, offset, planned if fits else 0)
            finally:
                run.close()  # a closed or failed stream still keeps the run's best weights
            last = histories[-1]
            offset = _Offset(
                offset.steps + last.steps,
                offset.epochs + last.epochs,
                offset.seconds + last.elapsed,
            )
            if index + 1 < len(members) and not another_run_fits(last, offset.seconds, budget):
                break
    finally:
        history = joined_history(model, members, model_config, histories)
        if on_finish is not None:
            on_finish(history)
    yield TrainingDone(history)
    return history


def joined_history(
    model: nn.Module,
    members: list[nn.Module],
    model_config: ModelConfig,
    histories: list[TrainingHistory],
) -> TrainingHistory:
    """Keep in ``model`` the ``members`` whose run ended well, give them one output shift,
    and describe the runs as one training.

    The first member is always kept. A later one is kept when its run reached its epoch
    cap; a run stopped or cut short leaves its member out. Each run folded its own class
    shares and border into its member's output bias; the kept members get the mean of
    those shifts, which leaves the average of their logits as it was and lets a fine-tune
    or :meth:`~napari_unetseg.core.segmenter.Segmenter.move_border` treat them as one.
    """
    count = len(members)
    if not histories:
        model.members = nn.ModuleList(members[:1])
        return TrainingHistory(stop_reason="stopped", members_dropped=count - 1)
    kept = [0] + [
        i for i, h in enumerate(histories[1:], start=1) if h.stop_reason == "epochs" and h.steps
    ]
    objects = model_config.task == "objects"
    shifts = []
    for i in kept:
        shift = folded_shift(members[i], histories[i].summary(), 0.0, objects)
        shifts.append(np.zeros(model_config.n_classes) if shift is None else shift)
    mean_shift = np.mean(shifts, axis=0)
    for i, shift in zip(kept, shifts, strict=True):
        shift_output_bias(members[i], mean_shift - shift)
    model.members = nn.ModuleList(members[i] for i in kept)

    used = [histories[i] for i in kept]
    last = histories[-1]
    last_kept = histories[kept[-1]]
    epochs_before = sum(h.epochs for h in histories[: kept[-1]])
    best = [h.best_validation_dice for h in used if h.best_validation_dice is not None]
    shares = [h.class_shares for h in used if h.class_shares]
    joined = TrainingHistory(
        step_losses=[v for h in histories for v in h.step_losses],
        epoch_losses=[v for h in histories for v in h.epoch_losses],
        validation_dice=[v for h in histories for v in h.validation_dice],
        best_epoch=None if last_kept.best_epoch is None else last_kept.best_epoch + epochs_before,
        best_validation_dice=float(np.mean(best)) if best else None,
        steps=sum(h.steps for h in histories),
        elapsed=sum(h.elapsed for h in histories),
        stop_reason=last.stop_reason if len(used) == len(histories) else "stopped",
        device=histories[0].device,
        warnings=list(dict.fromkeys(w for h in histories for w in h.warnings)),
        threads=last_kept.threads,
        class_shares=[round(float(v), 4) for v in np.mean(shares, axis=0)] if shares else None,
        class_shares_applied=float(np.mean([h.class_shares_applied or 0.0 for h in used])),
        border_shift=float(np.mean([h.border_shift or 0.0 for h in used])),
        wall_shift=float(np.mean([h.wall_shift or 0.0 for h in used])),
        all_right_from=None
        if last_kept.all_right_from is None
        else last_kept.all_right_from + epochs_before,
        paint_updates=sum(h.paint_updates for h in histories),
        float32_retries=sum(h.float32_retries for h in histories),
        skipped_steps=sum(h.skipped_steps for h in histories),
        members_dropped=count - len(kept),
        output_shift=[float(v) for v in mean_shift] if len(kept) > 1 else None,
    )
    if joined.members_dropped:
        why = (
            "the time budget would not have held another run as long as the first"
            if len(histories) == 1 and histories[0].stop_reason != "stopped"
            else "training was stopped or cut short"
        )
        joined.warnings.append(f"{len(kept)} of {count} networks were trained: {why}.")
    return joined
