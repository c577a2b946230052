"""Bad input gets a clear error, and nothing the caller passed is ever changed."""

import numpy as np
import pytest

from napari_unetseg.core import InputError, Segmenter, TrainConfig

QUICK = TrainConfig(max_seconds=None, max_epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32)


@pytest.fixture(scope="module")
def tiny():
    return Segmenter.create(base_width=4, depth=2, device="cpu")


def painted_pair(shape=(48, 48)):
    image = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[5:15, 5:40] = 1
    labels[30:40, 5:40] = 2
    image[labels == 2] += 50
    return image, labels


def read_only(array):
    array = array.copy()
    array.setflags(write=False)
    return array


def test_training_and_prediction_never_write_to_their_inputs(tiny):
    image, labels = painted_pair()
    frozen_image, frozen_labels = read_only(image), read_only(labels)
    tiny.train(frozen_image, frozen_labels, QUICK, progress=False)
    tiny.segment(frozen_image)
    tiny.predict_proba(frozen_image)
    np.testing.assert_array_equal(frozen_image, image)
    np.testing.assert_array_equal(frozen_labels, labels)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda im, lb: (im, np.zeros_like(lb)), "nothing is painted"),
        (lambda im, lb: (im, np.where(lb > 0, 2, 0).astype(np.uint8)), "only label 2 is painted"),
        (lambda im, lb: (im, lb[:40]), r"labels have shape \(40, 48\).*\(48, 48\)"),
        (lambda im, lb: (np.stack([im] * 3, -1), lb), "looks like RGB"),
        (lambda im, lb: (np.where(lb == 1, np.nan, im), lb), "NaN or infinite"),
        (lambda im, lb: (np.where(lb == 1, np.inf, im), lb), "NaN or infinite"),
        (lambda im, lb: (im.astype(np.complex64), lb), "complex"),
        (lambda im, lb: (im > 100, lb), "dtype bool"),
        (
            lambda im, lb: (im, np.where(lb == 2, 3, lb).astype(np.uint8)),
            "label 3 is painted but the model has 2",
        ),
        (lambda im, lb: (im, lb.astype(np.float32) + 0.5), "whole numbers"),
    ],
)
def test_training_input_mistakes_say_what_to_do(tiny, change, message):
    image, labels = change(*painted_pair())
    with pytest.raises(InputError, match=message):
        tiny.train(image, labels, QUICK, progress=False)


def test_too_small_images_are_refused_with_the_minimum_size():
    seg = Segmenter.create(base_width=4, depth=4, device="cpu")
    image, labels = painted_pair((12, 12))
    labels[:] = 1
    labels[6:] = 2
    with pytest.raises(InputError, match="needs at least 16x16"):
        seg.train(image, labels, QUICK, progress=False)
    with pytest.raises(InputError, match="at least 16 px"):
        seg.segment(image)


def test_images_smaller_than_one_tile_are_padded_and_predicted(tiny):
    image = np.random.default_rng(1).random((37, 53)).astype(np.float32)
    labels = tiny.segment(image, tile_size=512)
    assert labels.shape == (37, 53)
    assert labels.dtype == np.uint8
    assert tiny.predict_proba(image).shape == (2, 37, 53)


def test_prediction_input_mistakes_say_what_to_do(tiny):
    with pytest.raises(InputError, match="NaN"):
        tiny.segment(np.full((32, 32), np.nan, np.float32))
    with pytest.raises(InputError, match="expects 3 channels"):
        Segmenter.create(in_channels=3, base_width=4, depth=2).segment(np.zeros((32, 32)))
    with pytest.raises(InputError, match="ambiguous"):
        Segmenter.create(in_channels=3, base_width=4, depth=2).segment(np.zeros((3, 32, 3)))


def test_lists_of_images_must_pair_with_labels(tiny):
    image, labels = painted_pair()
    with pytest.raises(InputError, match="one labels array per image"):
        tiny.train([image, image], [labels], QUICK, progress=False)
