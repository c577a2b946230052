"""Training behaviour: determinism, stopping, best weights, stacks, lists, fine-tuning, validation."""

import threading

import numpy as np
import pytest
import torch

from napari_unetseg.core import (
    EpochDone,
    Segmenter,
    StepDone,
    TrainConfig,
    TrainingDone,
    TrainingStarted,
)
from napari_unetseg.core.metrics import dice
from napari_unetseg.core.synthetic import nuclei_scene, shapes_scene
from napari_unetseg.core.train import TrainingPlane, split_validation

TINY = {"base_width": 4, "depth": 2, "device": "cpu"}


def quick(**changes):
    settings = {
        "max_seconds": None,
        "max_epochs": 2,
        "steps_per_epoch": 3,
        "batch_size": 2,
        "patch_size": 32,
    }
    return TrainConfig(**(settings | changes))


def state_of(segmenter):
    return {k: v.clone() for k, v in segmenter.model.state_dict().items()}


def states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_training_is_deterministic_with_a_seed(nuclei_small):
    runs = []
    for _ in range(2):
        seg = Segmenter.create(**TINY, seed=1)
        seg.train(nuclei_small.image, nuclei_small.painted, quick(seed=7), progress=False)
        runs.append(state_of(seg))
    assert states_equal(*runs)
    other = Segmenter.create(**TINY, seed=1)
    other.train(nuclei_small.image, nuclei_small.painted, quick(seed=8), progress=False)
    assert not states_equal(runs[0], state_of(other))


def test_events_arrive_in_order_and_describe_progress(nuclei_small):
    seg = Segmenter.create(**TINY)
    events = list(seg.train_iter(nuclei_small.image, nuclei_small.painted, quick()))
    assert isinstance(events[0], TrainingStarted)
    assert events[0].train_pixels > 0 and events[0].validation_pixels > 0
    assert isinstance(events[-1], TrainingDone)
    steps = [e for e in events if isinstance(e, StepDone)]
    epochs = [e for e in events if isinstance(e, EpochDone)]
    assert [e.step for e in steps] == list(range(1, 7))
    assert len(epochs) == 2 and all(e.validation_dice is not None for e in epochs)
    assert all(np.isfinite(e.loss) and e.remaining is not None for e in steps)
    history = events[-1].history
    assert history.stop_reason == "epochs" and history.steps == 6
    assert seg.config.training["steps"] == 6 and seg.config.training["mode"] == "sparse"
    assert not seg.model.training  # left in eval mode


def test_stop_ends_within_one_step_and_keeps_the_best_weights(nuclei_small):
    seg = Segmenter.create(**TINY)
    stop = threading.Event()
    best_state, steps_after_stop = None, 0
    # the class-share correction shifts the output bias after the best weights are restored
    config = quick(max_epochs=50, steps_per_epoch=2, correct_class_shares=False)
    gen = seg.train_iter(nuclei_small.image, nuclei_small.painted, config, stop=stop)
    for event in gen:
        if isinstance(event, EpochDone) and event.improved:
            best_state = state_of(seg)
        if isinstance(event, StepDone):
            if stop.is_set():
                steps_after_stop += 1
            if event.step == 5:
                stop.set()
        if isinstance(event, TrainingDone):
            history = event.history
    assert steps_after_stop == 0
    assert history.stop_reason == "stopped" and history.steps == 5
    assert best_state is not None and states_equal(best_state, state_of(seg))


def test_closing_the_generator_stops_cleanly(nuclei_small):
    seg = Segmenter.create(**TINY)
    gen = seg.train_iter(nuclei_small.image, nuclei_small.painted, quick(max_epochs=50))
    for event in gen:
        if isinstance(event, StepDone) and event.step == 2:
            break
    gen.close()
    assert seg.config.training["stop_reason"] == "stopped"
    assert not seg.model.training


def test_time_budget_ends_training():
    scene = nuclei_scene((64, 64), seed=2)
    seg = Segmenter.create(**TINY)
    history = seg.train(
        scene.image, scene.painted, quick(max_seconds=1.0, max_epochs=None), progress=False
    )
    assert history.stop_reason == "time" and history.steps >= 1


def test_a_stack_trains_on_its_painted_planes_only():
    scene = nuclei_scene((64, 64), seed=4)
    stack = np.stack([scene.image] * 5)
    labels = np.zeros(stack.shape, np.uint8)
    labels[1] = scene.painted
    labels[3] = scene.painted
    seg = Segmenter.create(**TINY)
    started = next(seg.train_iter(stack, labels, quick()))
    assert started.n_planes == 2


def test_several_image_label_pairs_train_together():
    scenes = [nuclei_scene((64, 64), seed=s) for s in (5, 6)]
    seg = Segmenter.create(**TINY)
    events = seg.train_iter([s.image for s in scenes], [s.painted for s in scenes], quick())
    assert next(events).n_planes == 2


def test_rgb_and_multichannel_images_train_and_segment():
    scene = nuclei_scene((64, 64), seed=7)
    rgb = np.stack([scene.image // 256] * 3, -1).astype(np.uint8)
    seg = Segmenter.create(in_channels=3, **TINY)
    seg.train(rgb, scene.painted, quick(), progress=False)
    assert seg.segment(rgb).shape == (64, 64)
    two = np.stack([scene.image, scene.image[::-1]])
    seg2 = Segmenter.create(in_channels=2, **TINY)
    seg2.train(two, scene.painted, quick(), progress=False)
    assert seg2.segment(two).shape == (64, 64)


def test_fine_tuning_a_saved_model_keeps_its_normalisation(tmp_path, nuclei_small):
    seg = Segmenter.create(**TINY)
    seg.train(nuclei_small.image, nuclei_small.painted, quick(max_epochs=1), progress=False)
    path = seg.save(tmp_path / "model.safetensors")
    again = Segmenter.load(path, device="cpu")
    before = state_of(again)
    again.train(nuclei_small.image, nuclei_small.painted, quick(max_epochs=1), progress=False)
    assert again.config.training["runs"] == 2
    assert again.config.normalization == seg.config.normalization
    assert not states_equal(before, state_of(again))


def test_validation_is_held_out_by_region_not_by_pixel():
    rng = np.random.default_rng(0)
    classes = (rng.random((256, 256)) > 0.5).astype(np.int64)
    painted = np.zeros((256, 256), bool)
    painted[::3] = True  # horizontal strokes across the whole image
    plane = TrainingPlane(
        np.zeros((1, 256, 256), np.float32), classes, painted.copy(), np.zeros_like(painted)
    )
    split_validation([plane], 0.2, 64, rng, 2)
    held, kept = plane.validation_mask, plane.train_mask
    assert not (held & kept).any() and np.array_equal(held | kept, painted)
    assert 0.15 <= held.sum() / painted.sum() <= 0.35
    for y in range(0, 256, 64):
        for x in range(0, 256, 64):
            block = (slice(y, y + 64), slice(x, x + 64))
            assert not (held[block].any() and kept[block].any())


@pytest.mark.slow
def test_default_training_segments_only_the_ellipses():
    """Shape, not brightness: rectangles and triangles as bright as the ellipses are background."""
    scene = shapes_scene((256, 256), seed=0)
    seg = Segmenter.create(device="cpu")
    seg.train(
        scene.image, scene.painted, TrainConfig(max_seconds=None, max_epochs=3), progress=False
    )
    labels = seg.segment(scene.image)
    assert dice(labels, scene.classes, mask=scene.painted == 0) >= 0.9


@pytest.mark.slow
def test_default_training_on_sparse_nuclei_reaches_high_dice():
    scene = nuclei_scene((256, 256), seed=1)
    # random weights: the starting weights alone already segment this scene (Dice 0.986)
    seg = Segmenter.create(device="cpu", start="random")
    seg.train(
        scene.image, scene.painted, TrainConfig(max_seconds=None, max_epochs=3), progress=False
    )
    assert dice(seg.segment(scene.image), scene.classes, mask=scene.painted == 0) >= 0.9


def test_the_end_of_a_run_is_budgeted_from_measured_forward_passes():
    from napari_unetseg.core.train_budget import BORDER_SECONDS_PER_PIXEL as BORDER
    from napari_unetseg.core.train_budget import FinishEstimate

    finish = FinishEstimate(region_pixels=1000, share_pixels=4000, step_pixels=30_000)
    assert finish.seconds() == 0.0  # nothing measured yet
    finish.stepped(0.3)  # a step's three forward passes of 10 000 px: 1e-5 s/px
    assert finish.seconds() == pytest.approx(1e-5 * (4000 + 2 * 1000) + BORDER * 4000)
    finish.validated(0.02)  # validation measures it directly: 2e-5 s/px, and wins
    finish.stepped(0.3)
    assert finish.seconds() == pytest.approx(2e-5 * 6000 + BORDER * 4000)
    assert finish.validation_seconds == pytest.approx(0.02)
    without_shares = FinishEstimate(region_pixels=1000, share_pixels=0, step_pixels=30_000)
    without_shares.validated(0.01)
    assert without_shares.seconds() == pytest.approx(0.01)  # the last validation alone


def poison_gradients(segmenter, poisoned_calls):
    """Make the first parameter's gradient NaN on the backward passes ``poisoned_calls``
    (numbered from 1) picks; the list of calls so far is returned."""
    calls = []
    first = next(segmenter.model.parameters())

    def hook(grad):
        calls.append(len(calls) + 1)
        return torch.full_like(grad, float("nan")) if poisoned_calls(calls[-1]) else grad

    first.register_hook(hook)
    return calls


def parameters_of(segmenter):
    return [p.detach().clone() for p in segmenter.model.parameters()]


def test_a_bfloat16_step_with_nan_gradients_is_run_again_in_float32(nuclei_small, monkeypatch):
    # torch 2.13's bfloat16 3-D convolutions on CPU return NaN gradients for some shapes
    monkeypatch.setattr("napari_unetseg.core.train.cpu_has_native_bfloat16", lambda: True)
    seg = Segmenter.create(**TINY, seed=1)
    calls = poison_gradients(seg, lambda call: call == 1)  # the first step's bfloat16 pass
    config = quick(max_epochs=1, correct_class_shares=False)
    history = seg.train(nuclei_small.image, nuclei_small.painted, config, progress=False)
    assert history.steps == 3 and len(calls) == 4  # one step twice
    assert history.float32_retries == 1 and history.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in seg.model.parameters())
    assert not any("not finite" in w for w in history.warnings)


def test_steps_whose_gradients_stay_nan_are_skipped_and_said(nuclei_small):
    seg = Segmenter.create(**TINY, seed=1)
    before = parameters_of(seg)
    poison_gradients(seg, lambda call: True)
    config = quick(max_epochs=1, mixed_precision=False, correct_class_shares=False)
    history = seg.train(nuclei_small.image, nuclei_small.painted, config, progress=False)
    assert history.steps == 3 and history.skipped_steps == 3 and history.float32_retries == 0
    assert all(torch.equal(a, b) for a, b in zip(before, parameters_of(seg), strict=True))
    assert any(
        "3 of 3 training steps gave gradients that were not finite" in w for w in history.warnings
    )
