"""What a training run reports: the events ``train_iter`` yields, and the history it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MIN_TRUSTED_STEPS",
    "EpochDone",
    "PaintUpdated",
    "StepDone",
    "TrainingDone",
    "TrainingEvent",
    "TrainingHistory",
    "TrainingStarted",
]

StopReason = Literal["time", "epochs", "stopped", "error"]

#: Fewer optimiser steps than this and a run says its model is not to be trusted.
MIN_TRUSTED_STEPS = 50


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
    validation_note: str | None = None
    paint_notes: tuple[str, ...] = ()  # what the painter should know; also in the warnings
    members: int = 1  # U-Nets this training trains (see ModelConfig.members)


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


@dataclass(frozen=True)
class PaintUpdated:
    """New paint reached training between two epochs (live painting).

    ``problem`` says why the new paint could not be used; training then goes on with the
    paint it had.
    """

    epoch: int
    step: int
    train_pixels: int
    validation_pixels: int
    problem: str | None = None


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
    warnings: list[str] = field(default_factory=list)
    threads: int | None = None
    start_validation_dice: float | None = None
    class_shares: list[float] | None = None
    class_shares_applied: float | None = None
    #: How far the foreground logit moved to put the border on the brightness step, and to
    #: draw walls thinner (``wall_shift`` of it).
    border_shift: float | None = None
    wall_shift: float | None = None
    #: The first epoch after which no held-out painted pixel was wrong (None: never).
    all_right_from: int | None = None
    #: Times new paint was picked up during the run (live painting).
    paint_updates: int = 0
    #: Steps run again in float32 because bfloat16 gave gradients that were not finite.
    float32_retries: int = 0
    #: Steps whose gradients were not finite even so: no weight changed.
    skipped_steps: int = 0
    #: Members of a new model left out: no time for their runs, or training was stopped.
    members_dropped: int = 0
    #: The output-bias shift folded in after training, when it is not the one the class
    #: shares and border give (members trained in turn get the mean of theirs).
    output_shift: list[float] | None = None

    @property
    def trustworthy(self) -> bool:
        """False when too few steps ran for the model to be trusted (see ``warnings``)."""
        return self.steps >= MIN_TRUSTED_STEPS

    @property
    def epochs(self) -> int:
        return len(self.epoch_losses)

    @property
    def validation_saturated(self) -> bool:
        """True when every held-out painted pixel was right from the first half of the run
        on: the validation Dice of 1.000 then says the strokes are learned, not that the
        borders are right."""
        first = self.all_right_from
        return first is not None and first <= max(1, self.epochs // 2)

    def adjustment_note(self, class_names: tuple[str, ...] | list[str]) -> str:
        """One sentence on how the output was matched to the image after training ('' if not)."""
        if not self.class_shares or not self.class_shares_applied:
            return ""
        names = list(class_names)[: len(self.class_shares)]
        names += [f"class {i}" for i in range(len(names), len(self.class_shares))]
        shares = ", ".join(
            f"{name} {100 * share:.0f} %"
            for name, share in zip(names, self.class_shares, strict=True)
        )
        partly = "" if self.class_shares_applied >= 1 else " partly"
        note = f"The output was{partly} matched to the class shares found in the image ({shares})"
        if self.border_shift and self.border_shift != self.wall_shift:
            note += ", and the border moved onto the brightness step between the painted classes"
        if self.wall_shift:
            note += (
                f"; the foreground looks like walls, which blur draws too thick, so the border "
                f"moved inward by {-self.wall_shift:.2f} (the border slider moves it back)"
            )
        return note + "."

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly digest, stored in the model's config."""
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "seconds": round(self.elapsed, 1),
            "stop_reason": self.stop_reason,
            "best_epoch": self.best_epoch,
            "best_validation_dice": self.best_validation_dice,
            "validation_saturated": self.validation_saturated,
            "final_loss": self.epoch_losses[-1] if self.epoch_losses else None,
            "device": self.device,
            "warnings": list(self.warnings),
            "class_shares": self.class_shares,
            "class_shares_applied": self.class_shares_applied,
            "border_shift": self.border_shift,
            **({"wall_shift": self.wall_shift} if self.wall_shift else {}),
            **({"members_dropped": self.members_dropped} if self.members_dropped else {}),
            **({"output_shift": self.output_shift} if self.output_shift is not None else {}),
        }


@dataclass(frozen=True)
class TrainingDone:
    history: TrainingHistory


TrainingEvent = TrainingStarted | StepDone | EpochDone | PaintUpdated | TrainingDone
