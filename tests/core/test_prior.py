"""Class shares from unpainted pixels (Saerens' EM), folded into the output bias."""

import numpy as np
import torch

from napari_unetseg.core import Segmenter, TrainConfig, prior, train
from napari_unetseg.core.prior import class_share_shift, class_shares_em, shift_output_bias
from napari_unetseg.core.sampling import TrainingPlane


def test_em_recovers_a_rare_class_share():
    rng = np.random.default_rng(0)
    truth = (rng.random(200_000) < 0.1).astype(int)
    # exact posteriors for two Gaussians of equal variance under even priors
    x = rng.normal(truth * 2.0, 1.0)
    posterior_fg = 1 / (1 + np.exp(-(2.0 * x - 2.0)))
    probs = np.stack([1 - posterior_fg, posterior_fg], 1)
    shares = class_shares_em(probs, np.array([0.5, 0.5]))
    assert abs(shares[1] - 0.1) < 0.01
    assert probs[:, 1].mean() > 0.2  # uncorrected, the rare class looks twice as common


def test_em_keeps_every_class_above_a_floor():
    probs = np.tile([[0.999, 0.0005, 0.0005]], (1000, 1))
    shares = class_shares_em(probs, np.full(3, 1 / 3))
    assert shares.min() >= 0.9 / 30 and abs(shares.sum() - 1) < 1e-9


def test_the_shares_move_the_output_bias_only(rng):
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", seed=0)
    plane = TrainingPlane(
        rng.random((1, 96, 96), dtype=np.float32),
        np.zeros((96, 96), np.int64),
        np.zeros((96, 96), bool),
        np.zeros((96, 96), bool),
    )
    before = {k: v.clone() for k, v in seg.model.state_dict().items()}
    estimate = class_share_shift(seg.model, [plane], 4, torch.device("cpu"), rng)
    assert estimate is not None
    shares, shift = estimate.shares, estimate.shift
    assert estimate.border_shift == 0.0 and estimate.grow_back is None  # nothing painted
    assert estimate.wall_shift == 0.0
    assert np.allclose(shift, np.log(shares) - np.log(0.5))
    shift_output_bias(seg.model, shift)
    after = seg.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["outc.conv.bias"]
    moved = (after["outc.conv.bias"] - before["outc.conv.bias"]).numpy()
    assert np.allclose(moved, shift, atol=1e-6)


def volume_plane(shape):
    return TrainingPlane(
        np.zeros((1, *shape), np.float32),
        np.zeros(shape, np.int64),
        np.zeros(shape, bool),
        np.zeros(shape, bool),
    )


def test_a_deep_stack_is_covered_whole_by_its_share_windows():
    plane = volume_plane((60, 40, 150))  # 2 Z windows of 32 planes, 2 X windows of 128 px
    first = prior.crop_windows([plane], np.random.default_rng(0))[0]
    again = prior.crop_windows([plane], np.random.default_rng(1))[0]
    assert first == again  # not drawn at random
    seen = np.zeros(plane.classes.shape, int)
    for window in first:
        seen[window] += 1
        assert seen[window].shape == (32, 40, 128)
    assert seen.min() >= 1 and len(first) > 1
    assert prior.estimate_pixels([plane]) == len(first) * 32 * 40 * 128


def test_a_stack_too_large_to_cover_gets_random_crops():
    plane = volume_plane((64, 300, 300))  # 2 x 3 x 3 windows would cover it
    windows = prior.crop_windows([plane], np.random.default_rng(0))[0]
    assert len(windows) == prior.CROPS
    assert windows != prior.crop_windows([plane], np.random.default_rng(1))[0]
    assert all(plane.classes[w].shape == prior.MAX_VOLUME_CROP for w in windows)
    assert prior.estimate_pixels([plane]) == prior.CROPS * int(np.prod(prior.MAX_VOLUME_CROP))


CONFIG = TrainConfig(
    max_seconds=None, max_epochs=5, steps_per_epoch=10, batch_size=4, patch_size=64
)


def trained_with_shift(nuclei_small, monkeypatch, shift, grow_back=None):
    """Train with the estimated shift replaced by ``shift`` (and its grow-back alternative by
    ``grow_back``, a (shift, border shift) pair); returns the segmenter, history and the bias
    the plain training left."""
    seen = {}

    def fake(model, *args, **kwargs):
        seen["bias"] = prior.output_bias(model).detach().clone()
        alternative = None if grow_back is None else (np.asarray(grow_back[0], float), grow_back[1])
        return prior.OutputShift(np.array([0.5, 0.5]), np.asarray(shift, float), 0.0, alternative)

    monkeypatch.setattr(train, "class_share_shift", fake)
    seg = Segmenter.create(base_width=8, depth=3, device="cpu", seed=0)
    history = seg.train(nuclei_small.image, nuclei_small.painted, CONFIG, progress=False)
    return seg, history, seen["bias"]


def test_a_harmless_shift_is_applied_in_full(nuclei_small, monkeypatch):
    seg, history, bias = trained_with_shift(nuclei_small, monkeypatch, [0.0, -0.01])
    assert history.class_shares_applied == 1.0
    now = prior.output_bias(seg.model).detach()
    assert torch.allclose(now - bias, torch.tensor([0.0, -0.01]), atol=1e-6)
    assert seg.config.training["class_shares"] == [0.5, 0.5]


def test_a_shift_that_wrecks_the_held_out_paint_is_not_applied(nuclei_small, monkeypatch):
    seg, history, bias = trained_with_shift(nuclei_small, monkeypatch, [40.0, -40.0])
    assert history.class_shares is None and history.class_shares_applied is None
    assert any("not applied" in w for w in history.warnings)
    assert torch.allclose(prior.output_bias(seg.model).detach(), bias, atol=1e-5)


def test_the_border_grows_the_bright_class_back_only_when_held_out_paint_needs_it(
    nuclei_small, monkeypatch
):
    harmless, wrecking = [0.0, -0.01], [40.0, -40.0]
    seg, history, bias = trained_with_shift(nuclei_small, monkeypatch, harmless, (harmless, 1.5))
    assert history.class_shares_applied == 1.0 and history.border_shift == 0.0
    seg, history, bias = trained_with_shift(nuclei_small, monkeypatch, wrecking, (harmless, 1.5))
    assert history.class_shares_applied == 1.0 and history.border_shift == 1.5
    now = prior.output_bias(seg.model).detach()
    assert torch.allclose(now - bias, torch.tensor(harmless), atol=1e-5)  # nothing else left


def test_a_short_run_is_not_corrected(nuclei_small, monkeypatch):
    calls = []
    monkeypatch.setattr(train, "class_share_shift", lambda *a, **k: calls.append(1))
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", seed=0)
    seg.train(
        nuclei_small.image, nuclei_small.painted, CONFIG.replace(max_epochs=1), progress=False
    )
    assert calls == []


def test_a_two_class_border_moves_with_the_shares_and_is_recorded(nuclei_small):
    seg = Segmenter.create(base_width=8, depth=3, device="cpu", seed=0)
    history = seg.train(nuclei_small.image, nuclei_small.painted, CONFIG, progress=False)
    assert history.border_shift  # these nuclei are brighter than their background
    assert seg.config.training["border_shift"] == history.border_shift
    plain = Segmenter.create(base_width=8, depth=3, device="cpu", seed=0)
    unaligned = plain.train(
        nuclei_small.image,
        nuclei_small.painted,
        CONFIG.replace(align_borders=False),
        progress=False,
    )
    assert not unaligned.border_shift  # 0.0, or None where the shares were not applied


def test_the_adjustment_is_told_in_words():
    from napari_unetseg.core.training_events import TrainingHistory

    history = TrainingHistory(class_shares=[0.87, 0.13], class_shares_applied=1.0)
    assert history.adjustment_note(("background", "nuclei")) == (
        "The output was matched to the class shares found in the image "
        "(background 87 %, nuclei 13 %)."
    )
    history.class_shares_applied, history.border_shift = 0.5, -0.75
    note = history.adjustment_note(("background",))
    assert "partly matched" in note and "class 1 13 %" in note and "brightness step" in note
    assert TrainingHistory().adjustment_note(("background", "nuclei")) == ""
    assert TrainingHistory(class_shares=[0.9, 0.1]).adjustment_note(()) == ""  # not applied


class _OutputOnly(torch.nn.Module):
    def __init__(self, out_channels):
        super().__init__()
        self.outc = torch.nn.Module()
        self.outc.conv = torch.nn.Conv2d(4, out_channels, 1)


def test_the_folded_shift_is_rebuilt_from_the_training_summary():
    summary = {"class_shares": [0.8, 0.2], "class_shares_applied": 1.0, "border_shift": 0.5}
    two = prior.folded_shift(_OutputOnly(2), summary, border_moved=-0.25, objects=False)
    np.testing.assert_allclose(two, np.log([1.6, 0.4]) + np.array([-0.125, 0.125]))
    one = prior.folded_shift(_OutputOnly(1), summary, border_moved=-0.25, objects=False)
    np.testing.assert_allclose(one, [np.log(0.25) + 0.25])
    three = {"class_shares": [0.7, 0.2, 0.1], "class_shares_applied": 0.5}
    objects = prior.folded_shift(_OutputOnly(3), three, border_moved=1.0, objects=True)
    np.testing.assert_allclose(objects, 0.5 * np.log([2.1, 0.6, 0.3]) + np.array([-1.0, 0.0, 0.0]))
    four = {"class_shares": [0.4, 0.3, 0.2, 0.1], "class_shares_applied": 1.0}
    classes = prior.folded_shift(_OutputOnly(4), four, border_moved=0.0, objects=False)
    np.testing.assert_allclose(classes, np.log([1.6, 1.2, 0.8, 0.4]))
    assert prior.folded_shift(_OutputOnly(2), {}, 0.0, False) is None
    assert prior.folded_shift(_OutputOnly(2), {"class_shares": "x"}, 0.0, False) is None
    unapplied = {"class_shares": [0.8, 0.2], "class_shares_applied": None}
    assert prior.folded_shift(_OutputOnly(2), unapplied, 0.0, False) is None


def test_a_fine_tune_takes_out_the_last_class_shares_and_a_moved_border_first(nuclei_small):
    """Folded in again on top of the last run's, the class shares drifted further with every
    training on the same paint (docs/benchmarks.md, nineteenth session)."""
    seg = Segmenter.create(base_width=8, depth=3, device="cpu", seed=0)
    seg.train(nuclei_small.image, nuclei_small.painted, CONFIG, progress=False)
    assert seg.config.training["class_shares_applied"]  # these nuclei are rare: shares apply
    seg.move_border(0.5)
    trained = prior.output_bias(seg.model).detach().clone()
    folded = prior.folded_shift(seg.model, seg.config.training, 0.5, objects=False)
    assert folded is not None and folded[1] - folded[0] - 0.5 < -0.1  # fewer nuclei than even

    events = seg.train_iter(nuclei_small.image, nuclei_small.painted, CONFIG)
    next(events)  # started: the shift is out
    expected = trained - torch.as_tensor(folded, dtype=trained.dtype)
    assert torch.allclose(prior.output_bias(seg.model).detach(), expected, atol=1e-6)
    events.close()  # stopped before a step: the model is as it was
    assert torch.equal(prior.output_bias(seg.model).detach(), trained)
    assert seg.config.border_moved == 0.5

    history = seg.train(nuclei_small.image, nuclei_small.painted, CONFIG, progress=False)
    assert seg.config.border_moved == 0.0 and history.class_shares_applied
    again = prior.folded_shift(seg.model, seg.config.training, 0.0, objects=False)
    assert again is not None  # the new run's own shares, which the next fine-tune takes out
