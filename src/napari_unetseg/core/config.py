"""Settings for the model, training and prediction: validated dataclasses, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import numpy as np

from .errors import ConfigError

NormalizationMethod = Literal["percentile", "classic", "zscore", "none"]
Task = Literal["semantic", "objects"]
Upsampling = Literal["bilinear", "transposed"]
TrainMode = Literal["sparse", "dense", "objects", "objects-dense"]
LossName = Literal["auto", "bce+dice", "dice", "bce", "ce+dice", "ce"]
Precision = Literal["auto", "float32", "bfloat16", "float16"]
SpatialDims = Literal[2, 3]

#: Class names of an object model: what its three output channels mean.
OBJECT_CLASS_NAMES = ("background", "interior", "boundary")

T = TypeVar("T")


#: Largest number of classes a model may have (a painted id above it is an object, not a class).
MAX_CLASSES = 1024
#: Widest block (and most input channels) a model may have; far beyond any U-Net in use.
MAX_WIDTH = 1 << 16
#: JSON nesting allowed in a stored training summary.
MAX_SUMMARY_DEPTH = 6
#: How far a border may be moved by hand, in foreground log-odds: a probability of 0.5
#: becomes 0.9997 at 8, far beyond any useful correction.
MAX_BORDER_MOVE = 8.0
#: The most U-Nets one model may average (:attr:`ModelConfig.members`).
MAX_MEMBERS = 4


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# --------------------------------------------------------------------------- typed fields
#
# Every settings dataclass calls :func:`_check_fields` first in ``__post_init__``: each value
# is checked against the field's annotation (and numpy scalars and nested dicts are turned
# into the plain types), so a wrong type is a ConfigError naming the setting, the value and
# what to pass, before any range check compares it with a number.


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or None" if type(None) in args else "")
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict or hint is dict:
        return "a dict of plain values (numbers, text, lists)"
    names = {bool: "True or False", int: "a whole number", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    return f"a {getattr(hint, '__name__', hint)} (or a dict of its settings)"


class _Mismatch(Exception):
    pass


def _plain_json(value: Any, depth: int) -> Any:
    """``value`` as plain JSON types (numpy scalars converted); _Mismatch otherwise."""
    if depth > MAX_SUMMARY_DEPTH:
        raise _Mismatch
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float | np.integer | np.floating | np.bool_):
        return value.item() if hasattr(value, "item") else value
    if isinstance(value, np.ndarray) and value.size <= 10_000:
        return _plain_json(value.tolist(), depth)
    if isinstance(value, list | tuple):
        return [_plain_json(v, depth + 1) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain_json(v, depth + 1) for k, v in value.items()}
    raise _Mismatch


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` made to fit ``hint``, or _Mismatch."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        raise _Mismatch
    if hint is int:
        if isinstance(value, bool | np.bool_):
            raise _Mismatch
        if isinstance(value, int | np.integer):
            return int(value)
        if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
            return int(value)
        raise _Mismatch
    if hint is float:
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise _Mismatch
        return float(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple | np.ndarray):
            raise _Mismatch
        return tuple(_coerce(v, args[0]) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return _plain_json(value, 0)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return hint.from_mapping(value)  # type: ignore[attr-defined]
        raise _Mismatch
    raise _Mismatch  # pragma: no cover - an annotation this helper does not know


def _check_fields(obj: Any) -> None:
    """Check (and normalise) every field of a settings dataclass against its annotation."""
    cls = type(obj)
    hints = get_type_hints(cls)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        try:
            coerced = _coerce(value, hints[f.name])
        except _Mismatch:
            shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:57]}..."
            raise ConfigError(
                f"{f.name}={shown} ({type(value).__name__}) cannot be used: {cls.__name__}."
                f"{f.name} takes {_describe(hints[f.name])}."
            ) from None
        except RecursionError:
            raise ConfigError(f"{f.name} is nested too deeply to be a setting.") from None
        if coerced is not value:
            object.__setattr__(obj, f.name, coerced)


#: Entries of a training summary that the code reads back, and their types.
_SUMMARY_FIELDS: dict[str, Any] = {
    "steps": int | None,
    "epochs": int | None,
    "runs": int | None,
    "best_epoch": int | None,
    "seconds": float | None,
    "best_validation_dice": float | None,
    "validation_saturated": bool | None,
    "final_loss": float | None,
    "mode": str | None,
    "loss": str | None,
    "stop_reason": str | None,
    "device": str | None,
}


def check_argument(name: str, value: Any, hint: Any) -> Any:
    """A function argument checked like a settings field: ConfigError naming it otherwise."""
    try:
        return _coerce(value, hint)
    except _Mismatch:
        raise ConfigError(
            f"{name}={value!r} ({type(value).__name__}) cannot be used: {name} takes "
            f"{_describe(hint)}."
        ) from None


def _from_mapping(cls: Any, values: Mapping[str, Any], what: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, values)) - known)
    if unknown:
        raise ConfigError(
            f"unknown {what} settings {unknown}; {cls.__name__} takes {', '.join(sorted(known))}."
        )
    return cls(**values)


def settings(cls: type[T], value: Any, argument: str) -> T:
    """``value`` as ``cls``: an instance as it is, a dict of its settings built, else an error."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls.from_mapping(value)  # type: ignore[attr-defined,no-any-return]
    raise ConfigError(
        f"{argument}={value!r} ({type(value).__name__}) cannot be used: pass a {cls.__name__} "
        f"(or a dict of its settings), e.g. {argument}={cls.__name__}()."
    )


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

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> NormalizationConfig:
        """Build from a dict of settings; unknown names are a ConfigError that lists the known."""
        result: NormalizationConfig = _from_mapping(cls, values, "normalization")
        return result

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(
            "normalization method", self.method, ("percentile", "classic", "zscore", "none")
        )
        _check(
            0.0 <= self.low < self.high <= 100.0,
            f"normalization percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}.",
        )


def z_pooling_for(voxel_size: tuple[float, ...], depth: int) -> tuple[bool, ...]:
    """Per level of a 3-D U-Net, whether it pools (and up-samples) in Z as well as Y and X.

    A level pools in Z only where Z is fine enough: its spacing at that level is less than
    twice the in-plane spacing (the rule of nnU-Net). Without a voxel size, every level does.
    """
    if not voxel_size:
        return (True,) * depth
    z, xy = float(voxel_size[0]), float(min(voxel_size[1:]))
    pooling = []
    for _ in range(depth):
        pool_z = z < 2 * xy
        pooling.append(pool_z)
        xy *= 2
        z *= 2 if pool_z else 1
    return tuple(pooling)


#: Down-sampling levels of a new model, by its spatial dims. A 3-D model has one level less:
#: on the two nuclei stacks (4 paintings each, one thread, 300 steps) it scored +0.03 Dice
#: on the unpainted planes, and kept it at 200 steps (noisy crop 0.861 against 0.812); on the
#: membrane stack it lost 0.036 (docs/benchmarks.md, ninth session). Its steps are faster too.
DEFAULT_DEPTH = {2: 4, 3: 3}


def default_members(spatial_dims: int, task: str) -> int:
    """U-Nets in a new model: two for a 3-D class model, whose two runs averaged beat one on
    the real nuclei stacks and tied on the membranes (docs/benchmarks.md, twenty-second
    session); one otherwise."""
    return 2 if spatial_dims == 3 and task == "semantic" else 1


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
    spatial_dims: int = 2
    voxel_size: tuple[float, ...] = ()
    z_pooling: tuple[bool, ...] = ()
    #: How far the border was moved by hand (:meth:`Segmenter.move_border`), in foreground
    #: log-odds; already folded into the weights, kept to show and to undo.
    border_moved: float = 0.0
    #: What the weights were before any training: "" for random, or the starting weights'
    #: name (:mod:`~napari_unetseg.core.starting_weights`).
    started_from: str = ""
    #: U-Nets of this layout, each from its own first weights; the model returns the mean
    #: of their logits (:class:`~napari_unetseg.core.model.UNet`, :mod:`.member_runs`).
    members: int = 1

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Build from a dict of settings; unknown names are a ConfigError that lists the known."""
        result: ModelConfig = _from_mapping(cls, values, "model")
        return result

    def __post_init__(self) -> None:
        _check_fields(self)
        _check(self.in_channels >= 1, f"in_channels must be at least 1, got {self.in_channels}.")
        _check(
            1 <= self.n_classes <= MAX_CLASSES,
            f"n_classes must be 1..{MAX_CLASSES}, got {self.n_classes}.",
        )
        depth = len(self.decoder_channels)
        _check(depth >= 1, "the U-Net needs at least one down/up level (depth >= 1).")
        _check(
            len(self.encoder_channels) == depth + 1 and len(self.decoder_mid_channels) == depth,
            "encoder_channels needs depth + 1 entries and decoder_mid_channels depth entries; "
            f"got {len(self.encoder_channels)} and {len(self.decoder_mid_channels)} for depth {depth}.",
        )
        widths = (*self.encoder_channels, *self.decoder_channels, *self.decoder_mid_channels)
        _check(all(w >= 1 for w in widths), "every block width must be at least 1.")
        _check(
            max((*widths, self.in_channels)) <= MAX_WIDTH,
            f"block widths and in_channels must be at most {MAX_WIDTH}, got {max(widths)}.",
        )
        _check_choice("upsampling", self.upsampling, ("bilinear", "transposed"))
        _check_choice("task", self.task, ("semantic", "objects"))
        _check_choice("spatial_dims", self.spatial_dims, (2, 3))
        _check(
            1 <= self.members <= MAX_MEMBERS,
            f"members must be 1..{MAX_MEMBERS}, got {self.members!r}.",
        )
        if self.spatial_dims == 3:
            _check(
                len(self.z_pooling) == depth,
                f"a 3-D model needs one z_pooling entry per level ({depth}), "
                f"got {len(self.z_pooling)}.",
            )
            _check(
                len(self.voxel_size) in (0, 3) and all(v > 0 for v in self.voxel_size),
                f"voxel_size is (z, y, x), three positive numbers, got {self.voxel_size}.",
            )
        else:
            _check(
                not self.z_pooling and not self.voxel_size,
                "z_pooling and voxel_size belong to 3-D models (spatial_dims=3).",
            )
        _check(
            math.isfinite(self.border_moved) and abs(self.border_moved) <= MAX_BORDER_MOVE,
            f"border_moved must be within ±{MAX_BORDER_MOVE:g}, got {self.border_moved}.",
        )
        if self.task == "objects":
            _check(
                self.n_classes == 3,
                "an object model has exactly 3 outputs (background, interior, boundary); "
                f"got n_classes={self.n_classes}.",
            )
        for key, value in self.training.items():
            hint = _SUMMARY_FIELDS.get(key)
            if hint is not None:
                try:
                    _coerce(value, hint)
                except _Mismatch:
                    raise ConfigError(
                        f"training[{key!r}]={value!r} cannot be used: the training summary's "
                        f"{key} is {_describe(hint)}."
                    ) from None
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
    def min_depth(self) -> int:
        """Smallest number of planes a 3-D network accepts (1 for a 2-D one)."""
        return int(2 ** sum(self.z_pooling))

    @property
    def multiples(self) -> tuple[int, ...]:
        """Per spatial axis, the multiple an input side should be: (z,) y, x."""
        xy = (self.min_size, self.min_size)
        return (self.min_depth, *xy) if self.spatial_dims == 3 else xy

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
        depth: int | None = None,
        upsampling: Upsampling = "bilinear",
        task: Task = "semantic",
        class_names: tuple[str, ...] | list[str] = (),
        normalization: NormalizationConfig | None = None,
        spatial_dims: int = 2,
        voxel_size: tuple[float, ...] | list[float] | None = None,
        members: int | None = None,
    ) -> ModelConfig:
        """Our compact U-Net: widths double per level, the bottleneck is halved for bilinear.

        ``spatial_dims=3`` builds a 3-D U-Net; ``voxel_size`` (z, y, x) decides at which
        levels it pools in Z (see :func:`z_pooling_for`). ``depth=None``: the default for
        the spatial dims (:data:`DEFAULT_DEPTH`). ``members=None``: the default for the
        spatial dims and task (:func:`default_members`).
        """
        base_width = check_argument("base_width", base_width, int)
        spatial_dims = check_argument("spatial_dims", spatial_dims, int)
        _check_choice("spatial_dims", spatial_dims, (2, 3))
        depth = check_argument("depth", depth, int | None)
        if depth is None:
            depth = DEFAULT_DEPTH[spatial_dims]
        in_channels = check_argument("in_channels", in_channels, int)
        n_classes = check_argument("n_classes", n_classes, int)
        upsampling = check_argument("upsampling", upsampling, Upsampling)
        task = check_argument("task", task, Task)
        _check(base_width >= 1, f"base_width must be at least 1, got {base_width}.")
        _check(1 <= depth <= 6, f"depth must be between 1 and 6, got {depth}.")
        factor = 2 if upsampling == "bilinear" else 1
        encoder = [base_width * 2**i for i in range(depth)] + [base_width * 2**depth // factor]
        decoder = [base_width * 2 ** (depth - 1 - i) // factor for i in range(depth - 1)] + [
            base_width
        ]
        if task == "objects" and n_classes != 3:
            n_classes = 3
        voxel = check_argument("voxel_size", voxel_size, tuple[float, ...] | None) or ()
        _check(
            spatial_dims == 3 or not voxel,
            "voxel_size is for 3-D models; pass spatial_dims=3 with it.",
        )
        _check(
            len(voxel) in (0, 3) and all(v > 0 for v in voxel),
            f"voxel_size is (z, y, x) in any one unit, three positive numbers; got {voxel_size}.",
        )
        members = check_argument("members", members, int | None)
        if members is None:
            members = default_members(spatial_dims, task)
        return cls(
            in_channels=in_channels,
            n_classes=n_classes,
            encoder_channels=tuple(encoder),
            decoder_channels=tuple(decoder),
            decoder_mid_channels=tuple(decoder),
            upsampling=upsampling,
            conv_bias=False,
            task=task,
            class_names=check_argument("class_names", class_names, tuple[str, ...]),
            normalization=NormalizationConfig()
            if normalization is None
            else settings(NormalizationConfig, normalization, "normalization"),
            spatial_dims=spatial_dims,
            voxel_size=voxel,
            z_pooling=z_pooling_for(voxel, depth) if spatial_dims == 3 else (),
            members=members,
        )

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in ("border_moved", "started_from"):
            if not data[name]:  # older versions then still read the file
                del data[name]
        if data["members"] == 1:
            del data["members"]
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, default=_plain_value)

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """Settings read from a file: every value is checked here, so a bad file fails at load."""
        _check(
            isinstance(data, Mapping),
            f"model settings must be a JSON object, got {type(data).__name__}.",
        )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(map(str, data)) - known)
        _check(
            not unknown,
            f"unknown model settings {unknown}; this file needs a newer napari-unetseg.",
        )
        try:
            return cls(**data)
        except TypeError as error:  # a required setting is missing
            raise ConfigError(f"incomplete model settings: {error}.") from None

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except RecursionError:
            raise ConfigError("the stored settings are nested too deeply to be ours.") from None
        return cls.from_dict(data)


#: Epochs a training stops after by default, even with time left: on the real images, 450
#: steps of strokes scored below 300 (tissue nuclei 0 and 2, the membrane plane: -0.030,
#: -0.043, -0.033 Dice; the other two images level), and a fast computer would otherwise fit
#: the strokes for thousands of steps.
DEFAULT_MAX_EPOCHS = 12
#: The time budget the widget, the command line and a ``train()`` given no budget use, by the
#: model's spatial dims: a 3-D step takes several times a 2-D one. ``TrainConfig()`` has the
#: 2-D one.
DEFAULT_SECONDS = {2: 60.0, 3: 180.0}


@dataclass(frozen=True)
class TrainConfig:
    """How to train on painted labels.

    Painting conventions by ``mode``:

    - ``"sparse"``: 0 unpainted (ignored), 1 background, 2..K classes 1..K-1.
    - ``"dense"``: 0 background, 1..K-1 classes; every pixel counts.
    - ``"objects"``: 0 unpainted (ignored), 1 background, each object its own id from 2.
    - ``"objects-dense"``: 0 background, each object its own id from 1 (instance masks).

    Training stops after ``max_seconds`` or ``max_epochs`` (12 of 25 steps by default: more
    steps fit the strokes rather than the image), whichever comes first, and keeps
    the weights with the best validation Dice from the second half of the run (the last
    weights when too little paint can be held out to validate). ``max_seconds`` covers the
    final validation and the class-share correction too, timed from the first step's
    set-up; a step already begun is finished. ``threads=None`` lets the
    loop choose torch's CPU thread count from measured step times, which keeps it fast
    when another program keeps a core busy. ``normalization=None`` keeps the model's own
    (percentile for a new model); a value given here is stored with the model.
    ``align_borders`` (with ``correct_class_shares``) moves a two-class model's border onto
    the brightness step between its painted classes, where they differ in brightness
    (:mod:`napari_unetseg.core.borders`). ``background_around_objects`` ("objects" mode)
    counts the unpainted pixels touching a painted object, in its plane, as background: a
    whole painted object ends there.

    A 3-D model (``spatial_dims=3``) trains on ``volume_batch_size`` patches of
    ``volume_patch_size`` (z, y, x) voxels at ``volume_learning_rate`` instead of
    ``batch_size``, ``patch_size`` and ``learning_rate``; the patch's depth is cut to the
    stack's.
    """

    mode: TrainMode = "sparse"
    loss: LossName = "auto"
    max_seconds: float | None = DEFAULT_SECONDS[2]
    max_epochs: int | None = DEFAULT_MAX_EPOCHS
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
    threads: int | None = None
    correct_class_shares: bool = True
    align_borders: bool = True
    background_around_objects: bool = True
    volume_patch_size: tuple[int, ...] = (16, 64, 64)
    volume_batch_size: int = 2
    volume_learning_rate: float = 1e-3

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict of settings; unknown names are a ConfigError that lists the known."""
        result: TrainConfig = _from_mapping(cls, values, "train")
        return result

    def __post_init__(self) -> None:
        _check_fields(self)
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
        _check(
            0 < self.volume_learning_rate < 1,
            f"volume_learning_rate must be in (0, 1), got {self.volume_learning_rate}.",
        )
        _check(self.weight_decay >= 0, "weight_decay must not be negative.")
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1).")
        _check(
            0 <= self.validation_fraction <= 0.5,
            f"validation_fraction must be in [0, 0.5], got {self.validation_fraction}.",
        )
        _check(self.validation_block >= 8, "validation_block must be at least 8 pixels.")
        _check(0 <= self.intensity_jitter <= 1, "intensity_jitter must be in [0, 1].")
        _check(
            self.threads is None or self.threads >= 1,
            f"threads must be None (chosen while training) or at least 1, got {self.threads}.",
        )
        _check(
            len(self.volume_patch_size) == 3
            and 1 <= self.volume_patch_size[0] <= 256
            and all(16 <= s <= 512 for s in self.volume_patch_size[1:]),
            "volume_patch_size is (z, y, x) for 3-D models: z 1..256 planes, y and x 16..512 px; "
            f"got {self.volume_patch_size}.",
        )
        _check(
            1 <= self.volume_batch_size <= 64,
            f"volume_batch_size must be 1..64, got {self.volume_batch_size}.",
        )

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
    ``threads=None`` lets a long prediction on the CPU move to fewer threads when another
    process keeps a core busy, as training does (:mod:`napari_unetseg.core.threads`).
    ``precision="auto"`` uses bfloat16 on CPUs with native bfloat16 support and bfloat16 or
    float16 on CUDA, float32 elsewhere; the lower precision is kept only where it agrees
    with float32 on the model's first tile (:mod:`napari_unetseg.core.precision`).
    A 3-D model reads tiles of ``volume_tile_size`` (z, y, x) voxels, overlapping by
    ``overlap`` (at most a quarter of the tile in each axis), in float32 under "auto".
    A 3-D volume of at most ``volume_flips_up_to`` voxels (32×256×256 by default; 0: never)
    is predicted 8 times, flipped every way, and the probabilities averaged: over 40 trainings
    on the real stacks that gained 0.008 Dice on average, for 8 passes per tile.
    """

    tile_size: int = 576
    overlap: int = 16
    batch_size: int = 4
    device: str = "auto"
    precision: Precision = "auto"
    channels_last: bool = True
    min_object_size: int = 15
    volume_tile_size: tuple[int, ...] = (32, 128, 128)
    volume_flips_up_to: int = 32 * 256 * 256
    threads: int | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PredictConfig:
        """Build from a dict of settings; unknown names are a ConfigError that lists the known."""
        result: PredictConfig = _from_mapping(cls, values, "predict")
        return result

    def __post_init__(self) -> None:
        _check_fields(self)
        _check(32 <= self.tile_size <= 4096, f"tile_size must be 32..4096, got {self.tile_size}.")
        _check(self.overlap >= 0, f"overlap must not be negative, got {self.overlap}.")
        if self.overlap > self.tile_size // 4:
            # Small tiles keep three quarters of their width for new pixels.
            object.__setattr__(self, "overlap", self.tile_size // 4)
        _check(1 <= self.batch_size <= 64, f"batch_size must be 1..64, got {self.batch_size}.")
        _check_choice("precision", self.precision, ("auto", "float32", "bfloat16", "float16"))
        _check(self.min_object_size >= 0, "min_object_size must not be negative.")
        _check(
            len(self.volume_tile_size) == 3
            and 1 <= self.volume_tile_size[0] <= 1024
            and all(32 <= s <= 2048 for s in self.volume_tile_size[1:]),
            "volume_tile_size is (z, y, x) for 3-D models: z 1..1024 planes, y and x 32..2048 "
            f"px; got {self.volume_tile_size}.",
        )
        _check(
            self.volume_flips_up_to >= 0,
            f"volume_flips_up_to must not be negative, got {self.volume_flips_up_to}.",
        )
        _check(
            self.threads is None or self.threads >= 1,
            f"threads must be None (chosen while predicting) or at least 1, got {self.threads}.",
        )

    def replace(self, **changes: Any) -> PredictConfig:
        return dataclasses.replace(self, **changes)
