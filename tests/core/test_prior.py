"""Class shares from unpainted pixels (Saerens' EM), folded into the output bias."""

import numpy as np
import torch

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.prior import class_shares_em, correct_class_shares, output_layer
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
    assert shares.min() >= 0.0095 and abs(shares.sum() - 1) < 1e-9


def test_the_shares_move_the_output_bias_only(rng):
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", seed=0)
    plane = TrainingPlane(
        rng.random((1, 96, 96), dtype=np.float32),
        np.zeros((96, 96), np.int64),
        np.zeros((96, 96), bool),
        np.zeros((96, 96), bool),
    )
    before = {k: v.clone() for k, v in seg.model.state_dict().items()}
    shares = correct_class_shares(seg.model, [plane], 4, torch.device("cpu"), rng)
    after = seg.model.state_dict()
    bias = output_layer(seg.model).bias
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["outc.conv.bias"]
    shift = (after["outc.conv.bias"] - before["outc.conv.bias"]).numpy()
    assert np.allclose(shift - shift.mean(), np.log(shares) - np.log(shares).mean(), atol=1e-5)
    assert bias is not None and shares is not None and abs(shares.sum() - 1) < 1e-6


def test_training_records_the_shares_and_predicts_fewer_rare_pixels(nuclei_small):
    config = TrainConfig(
        max_seconds=None, max_epochs=3, steps_per_epoch=10, batch_size=4, patch_size=64
    )
    runs = {}
    for correct in (False, True):
        seg = Segmenter.create(base_width=8, depth=3, device="cpu", seed=0)
        history = seg.train(
            nuclei_small.image,
            nuclei_small.painted,
            config.replace(correct_class_shares=correct),
            progress=False,
        )
        runs[correct] = (seg.segment(nuclei_small.image) > 0).mean()
        if correct:
            assert history.class_shares is not None
            assert seg.config.training["class_shares"] == history.class_shares
            truth_share = (nuclei_small.classes > 0).mean()
            assert abs(history.class_shares[1] - truth_share) < abs(0.5 - truth_share)
        else:
            assert history.class_shares is None
    assert runs[True] <= runs[False]
