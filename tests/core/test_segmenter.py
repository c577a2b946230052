"""Segmenter prediction over the accepted array types and layouts."""

import numpy as np
import pytest

from napari_unetseg.core import PredictProgress, Segmenter
from napari_unetseg.core.predict import run_to_end


@pytest.fixture(scope="module")
def seg():
    return Segmenter.create(base_width=4, depth=2, device="cpu", seed=3)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(2).normal(100, 20, (70, 90)).astype(np.float32)


def test_outputs_have_the_documented_shapes_and_dtypes(seg, image):
    probs = seg.predict_proba(image)
    assert probs.dtype == np.float32 and probs.shape == (2, 70, 90)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    labels = seg.segment(image)
    assert labels.dtype == np.uint8 and labels.shape == (70, 90)
    np.testing.assert_array_equal(labels, probs.argmax(0))


def test_stacks_are_predicted_plane_by_plane(seg, image):
    stack = np.stack([image, image[::-1], image * 2])
    labels = seg.segment(stack)
    assert labels.shape == (3, 70, 90)
    # Normalisation uses the whole stack, so compare against each plane with the same scaling.
    probs = seg.predict_proba(stack)
    assert probs.shape == (2, 3, 70, 90)
    np.testing.assert_array_equal(labels, probs.argmax(0))


def test_dask_and_zarr_arrays_give_the_numpy_result(seg, image):
    da = pytest.importorskip("dask.array")
    expected = seg.predict_proba(image)
    np.testing.assert_allclose(
        seg.predict_proba(da.from_array(image, chunks=(32, 32))), expected, atol=1e-6
    )
    zarr = pytest.importorskip("zarr")
    stored = zarr.zeros(image.shape, chunks=(32, 32), dtype=image.dtype)
    stored[:] = image
    np.testing.assert_allclose(seg.predict_proba(stored), expected, atol=1e-6)


def test_rgb_and_channel_first_images_need_matching_models():
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    seg3 = Segmenter.create(in_channels=3, base_width=4, depth=2)
    assert seg3.segment(rgb).shape == (40, 50)
    assert seg3.segment(np.moveaxis(rgb, -1, 0)).shape == (40, 50)
    assert seg3.segment(np.stack([rgb, rgb]), axes="ZYXC").shape == (2, 40, 50)


def test_progress_counts_every_tile_of_every_plane(seg, image):
    events = seg.predict_iter(np.stack([image] * 3), tile_size=32, overlap=4, batch_size=4)
    seen: list[PredictProgress] = []
    result = run_to_end(events, seen.append)
    assert all(isinstance(e, PredictProgress) for e in seen)
    assert seen[-1].tiles_done == seen[-1].tiles_total and seen[-1].n_planes == 3
    assert [e.tiles_done for e in seen] == sorted(e.tiles_done for e in seen)
    assert result.labels.shape == (3, 70, 90) and result.probabilities.shape == (2, 3, 70, 90)


def test_prediction_restores_training_mode(seg, image):
    seg.model.train()
    seg.segment(image)
    assert seg.model.training
    seg.model.eval()


def test_describe_says_what_is_loaded(seg):
    text = seg.describe()
    assert "input channels: 1" in text and "not trained yet" in text and "device:" in text
    assert "Segmenter(in_channels=1" in repr(seg)


def test_a_paused_prediction_leaves_autograd_on_in_the_calling_thread(seg, image):
    import torch

    events = seg.predict_iter(np.stack([image] * 2), tile_size=32, overlap=4)
    next(events)  # suspended between batches
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    x = torch.ones(2, requires_grad=True)
    (x * 2).sum().backward()  # training code in the same thread still works
    for _ in events:
        pass
