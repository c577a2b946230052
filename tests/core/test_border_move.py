"""Moving a two-class model's border by hand (Segmenter.move_border)."""

import numpy as np
import pytest

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.errors import InputError


def foreground_log_odds(seg, image):
    p = np.clip(seg.predict_proba(image)[1].astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


@pytest.fixture
def image():
    return np.random.default_rng(5).normal(100, 20, (48, 64)).astype(np.float32)


def test_moving_shifts_the_foreground_log_odds_everywhere_and_moving_back_undoes_it(image):
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", seed=1)
    before = foreground_log_odds(seg, image)
    seg.move_border(1.5)
    after = foreground_log_odds(seg, image)
    # inference may run in bfloat16 on a CPU: single pixels carry its rounding
    assert abs(float(np.mean(after - before)) - 1.5) < 0.005
    np.testing.assert_allclose(after - before, 1.5, atol=0.03)
    assert seg.config.border_moved == 1.5 and seg.changed_since_saved
    assert (seg.segment(image) == 1).sum() >= (before > 0).sum()
    seg.move_border(-0.5)
    seg.move_border(-1.0)
    assert seg.config.border_moved == 0.0
    np.testing.assert_allclose(foreground_log_odds(seg, image), before, atol=0.03)


def test_a_moved_border_is_saved_loaded_and_described(tmp_path, image):
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", seed=2)
    seg.move_border(-2.0)
    path = seg.save(tmp_path / "moved.safetensors")
    loaded = Segmenter.load(path, device="cpu")
    assert loaded.config.border_moved == -2.0
    np.testing.assert_allclose(loaded.predict_proba(image), seg.predict_proba(image), atol=1e-6)
    assert "border moved by hand: -2" in loaded.describe()
    unmoved = Segmenter.create(base_width=4, depth=2)
    assert "border moved" not in unmoved.describe()
    # a model whose border was never moved stores no such setting: older versions read it
    assert "border_moved" not in unmoved.config.to_json()
    assert '"border_moved": -2.0' in loaded.config.to_json()


def test_a_3d_model_moves_its_border_too():
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", spatial_dims=3, seed=0)
    stack = np.random.default_rng(1).normal(0, 1, (8, 32, 32)).astype(np.float32)
    before = foreground_log_odds(seg, stack)
    seg.move_border(0.75)
    np.testing.assert_allclose(foreground_log_odds(seg, stack) - before, 0.75, atol=0.03)


def test_an_object_model_moves_background_against_interior_and_boundary(image):
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", task="objects", seed=6)
    assert seg.can_move_border

    def parts(p):
        p = np.clip(p.astype(np.float64), 1e-6, 1)
        return np.log(p[1] + p[2]) - np.log(p[0]), np.log(p[1]) - np.log(p[2])

    foreground, interior_vs_boundary = parts(seg.predict_proba(image))
    seg.move_border(-1.25)
    moved_foreground, moved_interior_vs_boundary = parts(seg.predict_proba(image))
    np.testing.assert_allclose(moved_foreground - foreground, -1.25, atol=0.03)
    np.testing.assert_allclose(moved_interior_vs_boundary, interior_vs_boundary, atol=0.03)


def test_models_of_more_than_two_classes_keep_their_border():
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", n_classes=3)
    assert not seg.can_move_border
    with pytest.raises(InputError, match="not for a 3-class model"):
        seg.move_border(1.0)
    assert seg.config.border_moved == 0.0


@pytest.mark.parametrize("shift", [-7.6, 9.0, float("nan"), float("inf"), "a lot"])
def test_a_shift_beyond_the_bound_or_not_a_number_changes_nothing(shift, image):
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", seed=3)
    seg.move_border(-0.5)
    before = seg.predict_proba(image)
    with pytest.raises(InputError, match=r"border can move at most|must be a number"):
        seg.move_border(shift)
    assert seg.config.border_moved == -0.5
    np.testing.assert_array_equal(seg.predict_proba(image), before)


def test_training_again_starts_the_border_afresh(nuclei_small):
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", seed=4)
    seg.move_border(3.0)
    seg.train(
        nuclei_small.image,
        nuclei_small.painted,
        TrainConfig(max_epochs=1, steps_per_epoch=3, max_seconds=None, batch_size=2),
        progress=False,
    )
    assert seg.config.border_moved == 0.0
