"""Settings for the model, training and prediction: validated dataclasses, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError

NormalizationMethod = Literal["percentile", "classic", "zscore", "none"]
Task = Literal["semantic", "objects"]
Upsampling = Literal["bilinear", "transposed"]
TrainMode = Literal["sparse", "dense", "objects", "objects-dense"]
LossName = Literal["auto", "bce+dice", "dice", "bce", "ce+dice", "ce"]
Precision = Literal["auto", "float32", "bfloat16", "float16"]

#: Class names of an object model: what its three output channels mean.
OBJECT_CLASS_NAMES = ("background", "interior", "boundary")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _plain_value(value: Any) -> Any:
    """JSON for numpy scalars and arrays that end up in a training summary."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot be stored in a model's settings")


def _check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    _check(value in choices, f"{name}={value!r} is not one of {', '.join(map(repr, choices))}.")


@dataclass(frozen=True)
class NormalizationConfig:
    """How raw intensities become network input; chosen at training time, stored with the model.

    ``percentile``: per channel, map the ``low``/``high`` percentiles of the whole image to 0/1.
    ``classic``: the Pytorch-UNet preprocessing, divide by 255 when any value exceeds 1.
    ``zscore``: per channel, subtract the image's mean and divide by its standard deviation
    (bioimage.io's ``zero_mean_unit_variance``, common in model zoo packages).
    ``none``: cast to float32 only.
    """

    method: NormalizationMethod = "percentile"
    low: float = 1.0
    high: float = 99.8

    def __post_init__(self) -> None:
        _check_choice(
            "normalization method", self.method, ("percentile", "classic", "zscore", "none")
        )
        _check(
            0.0 <= self.low < self.high <= 100.0,
            f"normalization percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}.",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a U-Net and use it the way it was trained.

    The block widths are explicit so that foreign layouts (the classic Pytorch-UNet and its
    variants) and our own compact defaults share one module. Build the native layout with
    :meth:`native`.
    """

    in_channels: int
    n_classes: int
    encoder_channels: tuple[int, ...]
    decoder_channels: tuple[int, ...]
    decoder_mid_channels: tuple[int, ...]
    upsampling: Upsampling = "bilinear"
    conv_bias: bool = False
    task: Task = "semantic"
    class_names: tuple[str, ...] = ()
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    origin: str = "native"
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.in_channels >= 1, f"in_channels must be at least 1, got {self.in_channels}.")
        _check(self.n_classes >= 1, f"n_classes must be at least 1, got {self.n_classes}.")
        depth = len(self.decoder_channels)
        _check(depth >= 1, "the U-Net needs at least one down/up level (depth >= 1).")
        _check(
            len(self.encoder_channels) == depth + 1 and len(self.decoder_mid_channels) == depth,
            "encoder_channels needs depth + 1 entries and decoder_mid_channels depth entries; "
            f"got {len(self.encoder_channels)} and {len(self.decoder_mid_channels)} for depth {depth}.",
        )
        widths = (*self.encoder_channels, *self.decoder_channels, *self.decoder_mid_channels)
        _check(all(w >= 1 for w in widths), "every block width must be at least 1.")
        _check_choice("upsampling", self.upsampling, ("bilinear", "transposed"))
        _check_choice("task", self.task, ("semantic", "objects"))
        if self.task == "objects":
            _check(
                self.n_classes == 3,
                "an object model has exactly 3 outputs (background, interior, boundary); "
                f"got n_classes={self.n_classes}.",
            )
        if self.class_names:
            expected = max(self.n_classes, 2)
            _check(
                len(self.class_names) == expected,
                f"class_names has {len(self.class_names)} names but the model has {expected} classes "
                "(background included).",
            )

    @property
    def depth(self) -> int:
        return len(self.decoder_channels)

    @property
    def min_size(self) -> int:
        """Smallest side (pixels) the network accepts: one pixel at the deepest level."""
        return int(2**self.depth)

    @property
    def names(self) -> tuple[str, ...]:
        """Class names, background first; generic names when none were given."""
        if self.class_names:
            return self.class_names
        if self.task == "objects":
            return OBJECT_CLASS_NAMES
        n = max(self.n_classes, 2)
        return ("background", *(f"class {i}" for i in range(1, n)))

    @classmethod
    def native(
        cls,
        in_channels: int = 1,
        n_classes: int = 2,
        *,
        base_width: int = 16,
        depth: int = 4,
        upsampling: Upsampling = "bilinear",
        task: Task = "semantic",
        class_names: tuple[str, ...] | list[str] = (),
        normalization: NormalizationConfig | None = None,
    ) -> ModelConfig:
        """Our compact U-Net: widths double per level, the bottleneck is halved for bilinear."""
        _check(base_width >= 1, f"base_width must be at least 1, got {base_width}.")
        _check(1 <= depth <= 6, f"depth must be between 1 and 6, got {depth}.")
        factor = 2 if upsampling == "bilinear" else 1
        encoder = [base_width * 2**i for i in range(depth)] + [base_width * 2**depth // factor]
        decoder = [base_width * 2 ** (depth - 1 - i) // factor for i in range(depth - 1)] + [
            base_width
        ]
        if task == "objects" and n_classes != 3:
            n_classes = 3
        return cls(
            in_channels=in_channels,
            n_classes=n_classes,
            encoder_channels=tuple(encoder),
            decoder_channels=tuple(decoder),
            decoder_mid_channels=tuple(decoder),
            upsampling=upsampling,
            conv_bias=False,
            task=task,
            class_names=tuple(class_names),
            normalization=normalization or NormalizationConfig(),
        )

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, default=_plain_value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _check(
            not unknown,
            f"unknown model settings {unknown}; this file needs a newer napari-unetseg.",
        )
        values = dict(data)
        for key in ("encoder_channels", "decoder_channels", "decoder_mid_channels", "class_names"):
            if key in values:
                values[key] = tuple(values[key])
        if isinstance(values.get("normalization"), dict):
            values["normalization"] = NormalizationConfig(**values["normalization"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class TrainConfig:
    """How to train on painted labels.

    Painting conventions by ``mode``:

    - ``"sparse"``: 0 unpainted (ignored), 1 background, 2..K classes 1..K-1.
    - ``"dense"``: 0 background, 1..K-1 classes; every pixel counts.
    - ``"objects"``: 0 unpainted (ignored), 1 background, each object its own id from 2.
    - ``"objects-dense"``: 0 background, each object its own id from 1 (instance masks).

    Training stops after ``max_seconds`` or ``max_epochs``, whichever comes first, and keeps
    the weights with the best validation Dice. ``normalization=None`` keeps the model's own
    (percentile for a new model); a value given here is stored with the model.
    """

    mode: TrainMode = "sparse"
    loss: LossName = "auto"
    max_seconds: float | None = 60.0
    max_epochs: int | None = None
    steps_per_epoch: int = 25
    batch_size: int = 8
    patch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    validation_fraction: float = 0.15
    validation_block: int = 64
    augment: bool = True
    intensity_jitter: float = 0.15
    normalization: NormalizationConfig | None = None
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, ("sparse", "dense", "objects", "objects-dense"))
        _check_choice("loss", self.loss, ("auto", "bce+dice", "dice", "bce", "ce+dice", "ce"))
        _check(
            self.max_seconds is not None or self.max_epochs is not None,
            "give a time budget (max_seconds) or a number of epochs (max_epochs), or both.",
        )
        _check(
            self.max_seconds is None or self.max_seconds > 0,
            f"max_seconds must be positive, got {self.max_seconds}.",
        )
        _check(
            self.max_epochs is None or self.max_epochs >= 1,
            f"max_epochs must be at least 1, got {self.max_epochs}.",
        )
        _check(self.steps_per_epoch >= 1, "steps_per_epoch must be at least 1.")
        _check(1 <= self.batch_size <= 256, f"batch_size must be 1..256, got {self.batch_size}.")
        _check(
            16 <= self.patch_size <= 1024, f"patch_size must be 16..1024, got {self.patch_size}."
        )
        _check(
            0 < self.learning_rate < 1,
            f"learning_rate must be in (0, 1), got {self.learning_rate}.",
        )
        _check(self.weight_decay >= 0, "weight_decay must not be negative.")
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1).")
        _check(
            0 <= self.validation_fraction <= 0.5,
            f"validation_fraction must be in [0, 0.5], got {self.validation_fraction}.",
        )
        _check(self.validation_block >= 8, "validation_block must be at least 8 pixels.")
        _check(0 <= self.intensity_jitter <= 1, "intensity_jitter must be in [0, 1].")

    @property
    def is_objects(self) -> bool:
        return self.mode in ("objects", "objects-dense")

    @property
    def is_sparse(self) -> bool:
        return self.mode in ("sparse", "objects")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PredictConfig:
    """How to run the network over an image of any size.

    ``tile_size`` is rounded down to a multiple of the network's minimum size; tiles overlap by
    ``overlap`` pixels on each side (at most a quarter of the tile) and are blended with a
    smooth ramp, so no seams show.
    ``precision="auto"`` uses bfloat16 on CPUs with native bfloat16 support and float16 on
    CUDA, float32 elsewhere.
    """

    tile_size: int = 576
    overlap: int = 16
    batch_size: int = 4
    device: str = "auto"
    precision: Precision = "auto"
    channels_last: bool = True
    min_object_size: int = 15

    def __post_init__(self) -> None:
        _check(32 <= self.tile_size <= 4096, f"tile_size must be 32..4096, got {self.tile_size}.")
        _check(self.overlap >= 0, f"overlap must not be negative, got {self.overlap}.")
        if self.overlap > self.tile_size // 4:
            # Small tiles keep three quarters of their width for new pixels.
            object.__setattr__(self, "overlap", self.tile_size // 4)
        _check(1 <= self.batch_size <= 64, f"batch_size must be 1..64, got {self.batch_size}.")
        _check_choice("precision", self.precision, ("auto", "float32", "bfloat16", "float16"))
        _check(self.min_object_size >= 0, "min_object_size must not be negative.")

    def replace(self, **changes: Any) -> PredictConfig:
        return dataclasses.replace(self, **changes)
