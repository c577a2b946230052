"""Issue 14: no silent wrong results (shared Segmenter, precision per model, extreme values, NaN weights)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core import precision as precision_module
from napari_unetseg.core import segmenter as segmenter_module
from napari_unetseg.core.config import NormalizationConfig, PredictConfig
from napari_unetseg.core.errors import InputError, WeightsFileError
from napari_unetseg.core.layout import resolve_layout
from napari_unetseg.core.normalization import fit_normalizer
from napari_unetseg.core.synthetic import nuclei_scene

QUICK = TrainConfig(
    max_seconds=None, max_epochs=2, steps_per_epoch=4, batch_size=2, patch_size=32, seed=1
)


def _small(**options: Any) -> Segmenter:
    return Segmenter.create(base_width=4, depth=2, device="cpu", **options)


def _record_modes(seg: Segmenter) -> list[bool]:
    """The model's training flag at every forward pass of the model itself."""
    modes: list[bool] = []
    model = seg.model

    def record(module: torch.nn.Module, args: Any) -> None:
        if module is model:  # inference copies inherit the hook; only the model itself counts
            modes.append(module.training)

    model.register_forward_pre_hook(record)
    return modes


# --------------------------------------------------------------------------- item 7


def test_a_prediction_during_training_leaves_the_training_mode_alone() -> None:
    scene = nuclei_scene((96, 96), seed=2)
    seg = _small()
    modes = _record_modes(seg)
    training = seg.train_iter(scene.image, scene.painted, QUICK)
    next(training)  # started: the model is in train mode
    modes.clear()  # (the memory estimate before training ran the model once in eval mode)
    prediction = seg.predict_iter(scene.image, tile_size=32, overlap=0, batch_size=1)
    next(prediction)  # a prediction is under way ...
    for _ in range(3):
        next(training)  # ... while training steps run
    steps = list(modes)
    assert steps and all(steps), steps
    for _ in training:  # training ends while the prediction is still suspended
        pass
    assert seg.model.training is False
    while True:
        try:
            next(prediction)
        except StopIteration:
            break
    assert seg.model.training is False  # the prediction did not put train mode back


def test_threads_share_a_segmenter_safely() -> None:
    scene = nuclei_scene((96, 96), seed=2)
    seg = _small()
    modes = _record_modes(seg)
    errors: list[BaseException] = []
    done = threading.Event()

    def train() -> None:
        try:
            seg.train(scene.image, scene.painted, QUICK.replace(max_epochs=3), progress=False)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            done.set()

    worker = threading.Thread(target=train)
    worker.start()
    results = []
    while not done.is_set():
        results.append(seg.segment(scene.image, tile_size=32, overlap=0))
    worker.join()
    assert not errors, errors
    # Every forward pass of the shared model is a training step or a validation (eval) pass
    # run by the training itself; none ran in a mode a prediction had set.
    assert modes.count(True) >= QUICK.steps_per_epoch * 3
    assert seg.model.training is False
    assert all(r.shape == scene.image.shape for r in results)


# --------------------------------------------------------------------------- item 8


def _auto_means_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    """``precision="auto"`` picks bfloat16 here, as on CPUs that compute it natively."""
    real = segmenter_module.inference_dtype

    def inference_dtype(device: torch.device, precision: str) -> torch.dtype:
        return torch.bfloat16 if precision == "auto" else real(device, precision)

    monkeypatch.setattr(segmenter_module, "inference_dtype", inference_dtype)


def test_auto_precision_falls_back_to_float32_where_bfloat16_disagrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _auto_means_bfloat16(monkeypatch)
    image = nuclei_scene((64, 64), seed=4).image
    seg = _small()
    with torch.no_grad():
        # A large offset shared by both logits leaves float32 probabilities as they were, but
        # bfloat16 rounds logits near 1000 to multiples of 4: their difference is lost.
        seg.model.outc.conv.weight.mul_(100.0)
        seg.model.outc.conv.bias.fill_(1000.0)
    in_bfloat16 = seg.predict_proba(image, precision="bfloat16")
    in_float32 = seg.predict_proba(image, precision="float32")
    assert np.abs(in_bfloat16 - in_float32).max() > precision_module.PROBABILITY_TOLERANCE

    auto = seg.predict_proba(image)

    np.testing.assert_allclose(auto, in_float32, atol=1e-5)


@pytest.mark.parametrize(("moved_share", "kept"), [(0.0005, True), (0.003, False)])
def test_a_few_moved_border_probabilities_do_not_cost_bfloat16(
    monkeypatch: pytest.MonkeyPatch, moved_share: float, kept: bool
) -> None:
    """Labels must agree on 99.5 % of pixels, and all but 0.1 % of probabilities within 0.05."""
    seg = _small()
    real = precision_module._probabilities
    moved: list[int] = []

    def probabilities(network, x, dtype):
        p = real(network, x, dtype)
        if dtype != torch.float32:  # move a share of the pixels' probabilities by 0.2
            foreground = p[:, 1].flatten().clone()
            count = int(moved_share * foreground.numel())
            foreground[:count] = (foreground[:count] + 0.2) % 1.0
            p[:, 1] = foreground.reshape(p[:, 1].shape)
            p[:, 0] = 1 - p[:, 1]
            moved.append(count)
        return p

    monkeypatch.setattr(precision_module, "_probabilities", probabilities)
    tile = np.random.default_rng(0).random((1, 1, 128, 128)).astype(np.float32)
    found = precision_module.agreement(seg.model, tile, torch.device("cpu"), torch.bfloat16)
    assert moved and moved[0] > 0
    assert precision_module.close_enough(*found) == kept


def test_auto_precision_keeps_bfloat16_where_it_is_proven(monkeypatch: pytest.MonkeyPatch) -> None:
    _auto_means_bfloat16(monkeypatch)
    image = nuclei_scene((64, 64), seed=4).image
    seg = _small()
    with torch.no_grad():  # constant, exactly representable output: both precisions agree
        seg.model.outc.conv.weight.zero_()
        seg.model.outc.conv.bias.copy_(torch.tensor([-1.0, 1.0]))
    layout = resolve_layout(image, seg.config.in_channels, None)
    chosen = precision_module.proven_dtype(
        seg.model, seg.config, image, layout, PredictConfig(), seg.device, torch.bfloat16
    )
    assert chosen == torch.bfloat16
    # The verdict is remembered for these weights, and asked again once they change.
    calls: list[int] = []
    real = precision_module.agreement
    monkeypatch.setattr(
        precision_module, "agreement", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    seg.segment(image)
    assert calls == []
    with torch.no_grad():
        seg.model.outc.conv.weight.mul_(400.0).add_(1.0)
    seg.segment(image)
    assert calls == [1]


# --------------------------------------------------------------------------- item 9


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("factor", [1e300, 1e-300, 1e30, 1e-9, 1e-20])
def test_extreme_values_normalise_like_ordinary_ones(factor: float, dtype: type) -> None:
    image = nuclei_scene((64, 64), seed=5).image.astype(np.float64)
    scaled = (image * factor).astype(dtype)
    if not np.isfinite(scaled).all() or (scaled == 0).mean() > 0.01:
        pytest.skip("not representable in this dtype")
    layout = resolve_layout(image, 1, None)
    expected = fit_normalizer(image, layout, NormalizationConfig())(image[None])
    got = fit_normalizer(scaled, layout, NormalizationConfig())(scaled[None])
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("factor", [1e300, 1e-300, 1e-9, 1e30])
def test_extreme_float64_values_segment_like_ordinary_ones(factor: float) -> None:
    image = nuclei_scene((64, 64), seed=5).image.astype(np.float64)
    seg = _small()
    expected = seg.predict_proba(image, precision="float32")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = seg.predict_proba(image * factor, precision="float32")
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_values_beyond_float32_without_normalisation_are_refused() -> None:
    seg = _small(normalization=NormalizationConfig(method="none"))
    with pytest.raises(InputError, match="float32"):
        seg.segment(np.full((32, 32), 1e300))


# --------------------------------------------------------------------------- item 10


def _write_with_one_bad_weight(path: Path, bad: float) -> None:
    """A weights file as a diverged training elsewhere would leave it (saves refuse to)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(path), "pt") as opened:
            metadata = opened.metadata()
            state = {k: opened.get_tensor(k) for k in opened.keys()}  # noqa: SIM118
        state["up1.conv.double_conv.0.weight"][0, 0, 0, 0] = bad
        save_file(state, str(path), metadata=metadata)
    else:
        state = torch.load(path, weights_only=True)
        state["up1.conv.double_conv.0.weight"][0, 0, 0, 0] = bad
        torch.save(state, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_weights_are_refused_at_load(tmp_path: Path, suffix: str, bad: float) -> None:
    path = _small().save(tmp_path / f"diverged{suffix}")
    _write_with_one_bad_weight(path, bad)
    with pytest.raises(WeightsFileError, match=r"diverged.*NaN or infinite.*up1\.conv"):
        Segmenter.load(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".ts"])
def test_nan_weights_are_not_saved_and_the_old_file_stays(tmp_path: Path, suffix: str) -> None:
    seg = _small()
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"the user's earlier file")
    with torch.no_grad():
        seg.model.up1.conv.double_conv[0].weight[0, 0, 0, 0] = float("nan")
    write = seg.export if suffix == ".ts" else seg.save
    with pytest.raises(WeightsFileError, match=r"not written.*NaN or infinite.*up1\.conv"):
        write(path)
    assert path.read_bytes() == b"the user's earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
