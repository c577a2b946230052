"""Uncertainty maps, paint suggestions, and training that picks up new paint between epochs."""

import threading

import numpy as np
import pytest

from napari_unetseg.core import EpochDone, InputError, Segmenter, TrainConfig, TrainingDone
from napari_unetseg.core.predict import run_to_end
from napari_unetseg.core.train import PaintUpdated
from napari_unetseg.core.uncertainty import entropy_from_probabilities, suggest_regions

TINY = {"base_width": 4, "depth": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def seg():
    return Segmenter.create(**TINY, seed=3)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(2).normal(100, 20, (70, 90)).astype(np.float32)


# --------------------------------------------------------------------------- the map


@pytest.mark.parametrize(
    ("probs", "expected"),
    [
        ([[1.0], [0.0]], 0.0),  # certain
        ([[0.5], [0.5]], 1.0),  # a coin toss
        ([[1 / 3], [1 / 3], [1 / 3]], 1.0),  # three classes, all alike
        ([[0.5]], 1.0),  # one sigmoid output at 0.5
        ([[0.0]], 0.0),  # one sigmoid output, certain
    ],
)
def test_entropy_is_zero_when_certain_and_one_when_all_classes_are_alike(probs, expected):
    value = entropy_from_probabilities(np.array(probs, np.float32))
    assert value.dtype == np.float32 and value.shape == (1,)
    assert value[0] == pytest.approx(expected, abs=1e-5)


def test_entropy_grows_as_the_classes_come_closer():
    p = np.linspace(0.5, 1.0, 11, dtype=np.float32)
    values = entropy_from_probabilities(np.stack([p, 1 - p]))
    assert np.all(np.diff(values) < 0)


def test_uncertainty_has_the_image_shape_and_stays_in_range(seg, image):
    unsure = seg.uncertainty(image)
    assert unsure.dtype == np.float32 and unsure.shape == image.shape
    assert unsure.min() >= 0 and unsure.max() <= 1


def test_uncertainty_comes_from_the_same_pass_as_probabilities_and_labels(seg, image):
    result = run_to_end(seg.predict_iter(image, uncertainty=True))
    assert result.labels is not None and result.probabilities is not None
    np.testing.assert_allclose(
        result.uncertainty, entropy_from_probabilities(result.probabilities), atol=1e-6
    )
    np.testing.assert_allclose(result.uncertainty, seg.uncertainty(image), atol=1e-6)
    assert run_to_end(seg.predict_iter(image)).uncertainty is None  # only when asked for


@pytest.mark.parametrize(
    ("shape", "channels", "axes", "spatial"),
    [
        ((3, 40, 50), 1, None, (3, 40, 50)),  # a stack
        ((40, 50, 3), 3, "YXC", (40, 50)),  # RGB
        ((2, 40, 50, 3), 3, "ZYXC", (2, 40, 50)),  # a stack of RGB planes
    ],
)
def test_uncertainty_of_stacks_and_multichannel_images(shape, channels, axes, spatial):
    model = Segmenter.create(in_channels=channels, **TINY)
    data = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    unsure = model.uncertainty(data, axes=axes)
    assert unsure.shape == spatial and unsure.dtype == np.float32


def test_object_models_have_an_uncertainty_over_their_three_outputs(image):
    objects = Segmenter.create(task="objects", **TINY)
    result = run_to_end(objects.predict_iter(image, uncertainty=True))
    assert result.labels.shape == result.uncertainty.shape == image.shape
    np.testing.assert_allclose(
        result.uncertainty, entropy_from_probabilities(result.probabilities), atol=1e-6
    )


def test_uncertainty_of_lazy_images_fills_out(seg, image):
    da = pytest.importorskip("dask.array")
    expected = seg.uncertainty(image)
    np.testing.assert_allclose(
        seg.uncertainty(da.from_array(image, chunks=32)), expected, atol=1e-6
    )
    out = np.full(image.shape, -1, np.float32)
    assert seg.uncertainty(image, out=out) is out
    np.testing.assert_allclose(out, expected, atol=1e-6)
    with pytest.raises(InputError, match="float dtype"):
        seg.uncertainty(image, out=np.zeros(image.shape, np.uint8))


# --------------------------------------------------------------------------- suggestions


def blob(shape, y, x, radius=6, value=0.9):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return np.where((yy - y) ** 2 + (xx - x) ** 2 <= radius**2, value, 0.0)


def test_suggestions_go_to_unpainted_uncertain_places_first():
    shape = (120, 160)
    unsure = (blob(shape, 30, 30, value=0.95) + blob(shape, 90, 120, value=0.7)).astype(np.float32)
    unsure += 0.01
    painted = np.zeros(shape, np.uint8)
    painted[20:40, 20:40] = 1  # the most uncertain place is painted already
    found = suggest_regions(unsure, painted, count=3, window=24)
    assert len(found) == 3
    assert abs(found[0].centre[0] - 90) <= 6 and abs(found[0].centre[1] - 120) <= 6
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)
    for a in found:  # boxes are windows inside the image, and none overlaps another
        top, left, bottom, right = a.box
        assert bottom - top == 24 and right - left == 24
        assert top >= 0 and left >= 0 and bottom <= shape[0] and right <= shape[1]
        for b in found:
            if a is not b:
                assert (
                    bottom <= b.box[0] or b.box[2] <= top or right <= b.box[1] or b.box[3] <= left
                )


def test_a_thin_uncertain_edge_does_not_outrank_a_whole_uncertain_window():
    unsure = np.zeros((96, 96), np.float32)
    unsure[:, :4] = 1.0  # a strip along the border, as tiling at the edge can give
    unsure[40:56, 50:66] = 0.5  # one whole window of doubt
    first = suggest_regions(unsure, count=1, window=16)[0]
    assert first.box == (40, 48, 56, 64) or abs(first.centre[1] - 58) <= 4
    assert first.score == pytest.approx(0.5, abs=0.15)


def test_suggestions_stay_where_allowed_and_stop_when_all_is_certain():
    shape = (100, 100)
    unsure = blob(shape, 50, 80).astype(np.float32)
    where = np.zeros(shape, bool)
    where[:, :50] = True
    assert suggest_regions(unsure, where=where, window=16) == []  # nothing uncertain there
    assert suggest_regions(np.zeros(shape, np.float32)) == []
    unsure += 0.1
    for s in suggest_regions(unsure, where=where, count=10, window=16):
        assert s.centre[1] < 50


def test_suggestions_in_a_stack_name_the_plane_and_skip_its_neighbours():
    stack = np.full((5, 64, 64), 0.05, np.float32)
    stack[3] = blob((64, 64), 20, 40, value=0.9) + 0.05
    stack[2] = blob((64, 64), 20, 40, value=0.8) + 0.05  # the same place, one plane up
    found = suggest_regions(stack, count=2, window=16)
    assert found[0].index == (3,) and found[0].position[0] == 3
    assert not (found[1].index == (2,) and abs(found[1].centre[0] - 20) < 16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"painted": np.zeros((5, 5))}, "painted has shape"),
        ({"where": np.zeros((8, 9), bool)}, "where has shape"),
        ({"count": 0}, "at least 1"),
    ],
)
def test_suggestions_refuse_inputs_that_do_not_fit(kwargs, message):
    with pytest.raises(InputError, match=message):
        suggest_regions(np.zeros((8, 8), np.float32), **kwargs)


def test_segmenter_suggests_outside_the_paint(seg, image):
    painted = np.zeros(image.shape, np.uint8)
    painted[:, :45] = 1
    found = seg.suggest_where_to_paint(image, painted, count=2, window=16)
    assert found and all(s.box[1] >= 45 - 8 for s in found)


# --------------------------------------------------------------------------- live paint


def quick(**changes):
    settings = {"max_seconds": None, "max_epochs": 3, "steps_per_epoch": 2, "batch_size": 2}
    return TrainConfig(**(settings | {"patch_size": 32} | changes))


class GrowingPaint:
    """The paint a person adds while training runs: one more stroke after the first epoch."""

    def __init__(self, first, later):
        self.first, self.later, self.calls = first, later, 0

    def __call__(self):
        self.calls += 1
        return (self.first if self.calls == 1 else self.later).copy()


def test_new_paint_reaches_training_between_epochs(nuclei_small):
    first = nuclei_small.painted.copy()
    first[:, 64:] = 0
    later = nuclei_small.painted.copy()
    before = later.copy()
    paint = GrowingPaint(first, later)
    seg = Segmenter.create(**TINY)
    events = list(seg.train_iter(nuclei_small.image, paint, quick(validation_fraction=0)))
    updates = [e for e in events if isinstance(e, PaintUpdated)]
    assert len(updates) == 1 and updates[0].problem is None
    assert updates[0].train_pixels == int((later > 0).sum()) > events[0].train_pixels
    history = events[-1].history
    assert history.paint_updates == 1 and history.epochs == 3  # training went on
    assert paint.calls >= 3  # read again after every epoch
    np.testing.assert_array_equal(later, before)  # never written to


def test_paint_that_cannot_be_used_is_reported_and_training_goes_on(nuclei_small):
    later = nuclei_small.painted.copy()
    later[:4, :4] = 7  # a class this two-class model does not have
    seg = Segmenter.create(**TINY)
    events = list(
        seg.train_iter(nuclei_small.image, GrowingPaint(nuclei_small.painted, later), quick())
    )
    problems = [e.problem for e in events if isinstance(e, PaintUpdated)]
    assert problems and all(problems)
    assert events[-1].history.paint_updates == 0 and events[-1].history.epochs == 3


def test_until_stopped_ignores_the_budget_and_keeps_the_final_weights(nuclei_small):
    seg = Segmenter.create(**TINY)
    stop = threading.Event()
    events = seg.train_iter(
        nuclei_small.image, nuclei_small.painted, quick(max_epochs=1), stop=stop, until_stopped=True
    )
    epochs = 0
    for event in events:
        if isinstance(event, EpochDone):
            assert event.remaining is None
            epochs += 1
            if epochs == 3:
                stop.set()
        if isinstance(event, TrainingDone):
            history = event.history
    assert history.stop_reason == "stopped" and history.epochs == 3
    assert history.best_epoch in (None, 3)  # nothing older replaced the final weights
    assert seg.is_trained
