"""Issue 14: fuzzing the public API over shapes, dtypes, axes and settings.

Every call either succeeds with a result of the right shape or raises one of the project's
own errors (:class:`UnetSegError`), never a raw ``TypeError``/``AttributeError``/... from
deep inside. Examples are few and small, and derandomised, so the file runs in well under a
minute and the same cases run in CI every time.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_unetseg.core import Segmenter  # noqa: E402
from napari_unetseg.core.config import (  # noqa: E402
    ModelConfig,
    NormalizationConfig,
    PredictConfig,
    TrainConfig,
)
from napari_unetseg.core.errors import UnetSegError  # noqa: E402
from napari_unetseg.core.layout import resolve_layout  # noqa: E402

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = ["uint8", "uint16", "int16", "int32", "int64", "float32", "float64", "bool", "complex64"]

#: Values of any type a careless caller may pass for a setting.
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@functools.lru_cache(maxsize=2)
def _model(in_channels: int) -> Segmenter:
    return Segmenter.create(in_channels=in_channels, base_width=2, depth=2, device="cpu")


@st.composite
def images(draw: Any) -> np.ndarray:
    ndim = draw(st.sampled_from([2, 2, 2, 3, 3, 4, 1]))  # mostly images that can work
    side = st.one_of(st.integers(4, 40), st.integers(4, 40), st.integers(0, 3))
    shape = tuple(draw(st.lists(side, min_size=ndim, max_size=ndim)))
    if np.prod(shape) > 20_000:
        shape = tuple(min(n, 12) for n in shape)
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    values = draw(st.sampled_from(["random", "random", "random", "zeros", "huge", "tiny", "nan"]))
    rng = np.random.default_rng(draw(st.integers(0, 100)))
    image = rng.random(shape) * 100
    if values == "zeros":
        image = np.zeros(shape)
    elif values == "huge":
        image = image * 1e300 if dtype.kind == "f" else image * 1e12
    elif values == "tiny":
        image = image * 1e-30
    elif values == "nan" and image.size:
        image.flat[0] = np.nan
    with np.errstate(all="ignore"):
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            image = np.clip(np.nan_to_num(image), info.min, info.max)
        return image.astype(dtype)


AXES = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.text(alphabet="TZSCYXQ", min_size=0, max_size=5),
    st.sampled_from(["YX", "YXC", "CYX", "ZYX", "ZCYX", "yx"]),
    ANY_VALUE,
)

OVERRIDES = st.one_of(
    st.just({}),
    st.just({}),
    st.dictionaries(
        st.sampled_from(["tile_size", "overlap", "batch_size", "precision", "min_object_size"]),
        st.one_of(st.integers(-5, 5000), st.sampled_from([32, 64, "float32", "auto", "bfloat16"]),
                  ANY_VALUE),
        max_size=2,
    ),
)  # fmt: skip


@settings(FUZZ, max_examples=80)
@given(image=images(), axes=AXES, overrides=OVERRIDES, channels=st.sampled_from([1, 2]))
def test_segment_succeeds_with_the_right_shape_or_explains(
    image: np.ndarray, axes: Any, overrides: dict[str, Any], channels: int
) -> None:
    seg = _model(channels)
    before = image.copy()
    try:
        labels = seg.segment(image, axes=axes, **overrides)
    except UnetSegError:
        return
    finally:
        np.testing.assert_array_equal(image, before)  # inputs are never modified
    layout = resolve_layout(image, channels, axes)
    assert labels.shape == layout.output_shape
    assert labels.dtype.kind == "u"
    assert int(labels.max(initial=0)) <= max(seg.config.n_classes, 2) - 1


SETTINGS: list[tuple[Any, list[str]]] = [
    (TrainConfig, ["max_seconds", "max_epochs", "batch_size", "patch_size", "learning_rate",
                   "mode", "normalization", "device", "augment", "validation_fraction"]),
    (PredictConfig, ["tile_size", "overlap", "batch_size", "precision", "channels_last",
                     "device"]),
    (NormalizationConfig, ["method", "low", "high"]),
]  # fmt: skip


@FUZZ
@given(data=st.data(), which=st.integers(0, len(SETTINGS) - 1))
def test_settings_are_built_or_refused_with_a_config_error(data: Any, which: int) -> None:
    cls, names = SETTINGS[which]
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    values = {name: data.draw(ANY_VALUE, label=name) for name in chosen}
    try:
        config = cls(**values)
    except UnetSegError:
        return
    assert type(cls.from_mapping(config.__dict__)) is cls  # a valid object round-trips


@FUZZ
@given(
    options=st.dictionaries(
        st.sampled_from(["in_channels", "n_classes", "base_width", "depth", "upsampling",
                         "task", "class_names", "normalization"]),
        st.one_of(st.integers(-2, 6), ANY_VALUE),
        max_size=3,
    )
)  # fmt: skip
def test_model_settings_are_built_or_refused_with_a_config_error(options: dict[str, Any]) -> None:
    try:
        config = ModelConfig.native(**options)
    except UnetSegError:
        return
    assert ModelConfig.from_json(config.to_json()) == config


@settings(FUZZ, max_examples=12)
@given(
    painted=st.sampled_from(["uint8", "uint16", "int32", "int64", "uint64", "float32", "bool"]),
    top=st.sampled_from([1, 2, 3, 255, 2**31 - 1, 2**63, -1]),
    mode=st.sampled_from(["sparse", "dense", "objects", "objects-dense"]),
)
def test_training_on_any_painted_values_trains_or_explains(
    painted: str, top: int, mode: str
) -> None:
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    dtype = np.dtype(painted)
    labels = np.zeros((32, 32), dtype)
    with np.errstate(all="ignore"):
        labels[2:6, 2:20] = np.array(1).astype(dtype)
        labels[20:26, 2:20] = np.array(top).astype(dtype) if dtype.kind != "u" or top >= 0 else 0
    config = TrainConfig(
        mode=mode, max_seconds=None, max_epochs=1, steps_per_epoch=1, batch_size=1, patch_size=16
    )
    seg = Segmenter.create(
        base_width=2, depth=2, device="cpu", task="objects" if "objects" in mode else "semantic"
    )
    try:
        history = seg.train(image, labels, config, progress=False)
    except UnetSegError:
        return
    assert history.steps == 1
