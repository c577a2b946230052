"""The hold-out never empties a plane or a class, and a run says when it cannot be trusted."""

import numpy as np
import pytest
import torch

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.sampling import TrainingPlane
from napari_unetseg.core.train import MIN_TRUSTED_STEPS
from napari_unetseg.core.validation import split_validation, validation_block_for

TINY = {"base_width": 4, "depth": 2, "device": "cpu"}


def plane_with_strokes(shape, rng, rows=range(4, 60, 6)):
    classes = np.zeros(shape, np.int64)
    classes[:, shape[1] // 2 :] = 1
    painted = np.zeros(shape, bool)
    for r in rows:
        if r < shape[0]:
            painted[r, 2:-2] = True
    return TrainingPlane(
        np.zeros((1, *shape), np.float32), classes, painted.copy(), np.zeros_like(painted)
    )


def test_small_stack_planes_keep_most_of_their_paint_for_training():
    """A 61x57 stack painted on 3 planes: every plane keeps at least half of each class."""
    rng = np.random.default_rng(0)
    for seed in range(20):
        planes = [plane_with_strokes((61, 57), rng) for _ in range(3)]
        before = [np.bincount(p.classes[p.train_mask], minlength=2) for p in planes]
        split = split_validation(planes, 0.15, 64, np.random.default_rng(seed), 2)
        for plane, counts in zip(planes, before, strict=True):
            kept = np.bincount(plane.classes[plane.train_mask], minlength=2)
            assert np.all(kept >= counts - counts // 2), (seed, kept, counts)
            assert not (plane.train_mask & plane.validation_mask).any()
        if split.pixels:
            held = sum(int(p.validation_mask.sum()) for p in planes)
            assert held == split.pixels


def test_region_side_shrinks_with_the_plane():
    assert validation_block_for((61, 57), 64) == 14
    assert validation_block_for((1024, 1024), 64) == 64
    assert validation_block_for((20, 20), 64) == 8


def test_too_little_paint_holds_nothing_out_and_says_why():
    plane = plane_with_strokes((40, 40), None, rows=[10])
    split = split_validation([plane], 0.15, 64, np.random.default_rng(0), 2)
    assert split.pixels == 0 and "too few" in split.reason
    assert not plane.validation_mask.any()


def test_one_stroke_per_class_cannot_be_split_and_the_run_says_so(nuclei_small):
    painted = np.zeros_like(nuclei_small.painted)
    painted[5, 5:60] = 1
    ys, xs = np.nonzero(nuclei_small.classes)
    painted[ys[:30], xs[:30]] = 2
    seg = Segmenter.create(**TINY)
    history = seg.train(
        nuclei_small.image,
        painted,
        TrainConfig(max_seconds=None, max_epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32),
        progress=False,
    )
    assert history.best_validation_dice is None
    assert any("too few" in w or "too little" in w for w in history.warnings)


def test_a_short_run_is_flagged_and_a_zero_step_run_changes_nothing(nuclei_small):
    seg = Segmenter.create(**TINY)
    short = TrainConfig(
        max_seconds=None, max_epochs=1, steps_per_epoch=3, batch_size=2, patch_size=32
    )
    history = seg.train(nuclei_small.image, nuclei_small.painted, short, progress=False)
    assert history.steps == 3 < MIN_TRUSTED_STEPS and not history.trustworthy
    assert any("too few to trust" in w for w in history.warnings)
    assert seg.config.training["warnings"] == history.warnings

    fresh = Segmenter.create(**TINY)
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    gen = fresh.train_iter(nuclei_small.image, nuclei_small.painted, short)
    next(gen)  # started, no step yet
    gen.close()
    assert not fresh.is_trained and fresh.config.training == {}
    after = fresh.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_bad_fine_tune_keeps_the_better_starting_weights(nuclei_small):
    seg = Segmenter.create(**TINY)
    good = TrainConfig(
        max_seconds=None, max_epochs=4, steps_per_epoch=10, batch_size=4, patch_size=64
    )
    seg.train(nuclei_small.image, nuclei_small.painted, good, progress=False)
    start = {k: v.clone() for k, v in seg.model.state_dict().items()}
    # a learning rate so high that a few steps wreck the weights
    bad = good.replace(max_epochs=1, steps_per_epoch=3, learning_rate=0.9, warmup_fraction=0.0)
    history = seg.train(nuclei_small.image, nuclei_small.painted, bad, progress=False)
    assert history.start_validation_dice is not None
    assert history.best_validation_dice >= history.start_validation_dice
    if history.validation_dice[-1] < history.start_validation_dice:
        assert history.best_epoch == 0
        assert any("starting weights are kept" in w for w in history.warnings)
        assert all(torch.equal(start[k], v) for k, v in seg.model.state_dict().items())


@pytest.mark.parametrize("stop_after", [2, 5])
def test_ctrl_c_records_a_stop_not_a_finished_run(nuclei_small, stop_after):
    seg = Segmenter.create(**TINY)
    config = TrainConfig(
        max_seconds=None, max_epochs=50, steps_per_epoch=3, batch_size=2, patch_size=32
    )
    gen = seg.train_iter(nuclei_small.image, nuclei_small.painted, config)
    with pytest.raises(KeyboardInterrupt):
        for event in gen:
            if getattr(event, "step", 0) == stop_after:
                gen.throw(KeyboardInterrupt)
    assert seg.config.training["stop_reason"] == "stopped"


def test_training_memory_follows_the_paint_not_the_image():
    """A 4000x4000 image painted in one corner: only that corner and its context are held."""
    import tracemalloc

    from napari_unetseg.core.config import ModelConfig
    from napari_unetseg.core.planes import prepare_planes

    image = np.zeros((4000, 4000), np.uint8)
    image[100:140, 100:140] = 200
    labels = np.zeros(image.shape, np.uint8)
    labels[90:150, 60:80] = 1
    labels[110:130, 110:130] = 2
    config = TrainConfig(patch_size=128)
    model_config = ModelConfig.native()
    tracemalloc.start()
    try:
        planes = prepare_planes(image, labels, model_config, config, model_config.normalization)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (plane,) = planes
    assert plane.image.shape == (1, 150 + 128, 130 + 128)  # up to the last painted row/column + 128
    assert plane.classes.dtype == np.uint8
    assert int(plane.train_mask.sum()) == int((labels > 0).sum())
    # a float32 copy of the whole plane alone would be 64 MB, its int64 classes 128 MB
    assert peak < 48 * 2**20, f"{peak / 2**20:.0f} MiB"


class ConstantClass(torch.nn.Module):
    """Says class ``c`` everywhere."""

    def __init__(self, c, n=2):
        super().__init__()
        self.c, self.n = c, n

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.n, *x.shape[2:])
        logits[:, self.c] = 5.0
        return logits


def test_the_held_out_score_counts_the_wrong_pixels():
    from napari_unetseg.core.validation import evaluate, validation_regions

    rng = np.random.default_rng(0)
    plane = plane_with_strokes((64, 64), rng)
    plane.validation_mask[:] = plane.train_mask
    regions = validation_regions([plane], 64, 4, rng)
    painted = plane.classes[plane.validation_mask]
    cpu = torch.device("cpu")
    all_foreground = evaluate(ConstantClass(1), regions, cpu, False, 2)
    assert all_foreground.pixels == len(painted)
    assert all_foreground.wrong == int(np.sum(painted == 0)) > 0
    assert 0 < all_foreground.dice < 1
    right = evaluate(ConstantClass(0), regions, cpu, False, 2)
    assert right.wrong == int(np.sum(painted == 1)) and right.dice == 0.0


@pytest.mark.parametrize(("all_right_from", "warned"), [(2, True), (5, False), (None, False)])
def test_a_saturated_validation_says_it_cannot_judge_the_borders(all_right_from, warned):
    from napari_unetseg.core.kept_weights import BestWeights
    from napari_unetseg.core.train import TrainingHistory, _finish

    model = torch.nn.Conv2d(1, 2, 1)
    history = TrainingHistory(steps=150, epoch_losses=[0.1] * 6, all_right_from=all_right_from)
    _finish(history, BestWeights(model), model)
    said = any("held-out painted pixel was right" in w for w in history.warnings)
    assert said == warned
