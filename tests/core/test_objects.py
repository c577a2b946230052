"""Object models: instance ids, touching objects separated, nothing cut at tile borders."""

import numpy as np
import pytest
import torch
from skimage.draw import ellipse
from torch import nn

from napari_unetseg.core import (
    ModelConfig,
    NormalizationConfig,
    Segmenter,
    TrainConfig,
    TrainingDone,
)
from napari_unetseg.core.metrics import match_objects, object_f1
from napari_unetseg.core.objects import objects_from_probabilities
from napari_unetseg.core.synthetic import nuclei_scene


class IntensityOracle(nn.Module):
    """A stand-in network: 0 -> background, 1 -> interior, 0.5 -> boundary, pixel by pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :1]
        return torch.cat([-20 * v + 5, -20 * (v - 1).abs() + 5, -20 * (v - 0.5).abs() + 5], 1) * 4


def oracle_segmenter() -> Segmenter:
    config = ModelConfig.native(task="objects", normalization=NormalizationConfig(method="none"))
    return Segmenter(IntensityOracle(), config, device="cpu")


def touching_ellipses(shape=(200, 230)):
    truth = np.zeros(shape, np.uint16)
    n = 0
    for cy in range(20, shape[0] - 20, 30):
        for cx in range(22, shape[1] - 22, 36):
            n += 1
            rr, cc = ellipse(cy, cx, 15, 19, shape=shape)  # neighbours overlap: they touch
            truth[rr, cc] = n
    image = np.where(truth > 0, 1.0, 0.0).astype(np.float32)
    edges = np.zeros(shape, bool)
    edges[:, 1:] |= truth[:, 1:] != truth[:, :-1]
    edges[1:, :] |= truth[1:, :] != truth[:-1, :]
    image[edges & (truth > 0)] = 0.5
    return image, truth


@pytest.mark.parametrize("tile_size", [64, 96, 512])
def test_objects_crossing_tile_borders_are_neither_cut_nor_duplicated(tile_size):
    image, truth = touching_ellipses()
    labels = oracle_segmenter().segment(image, tile_size=tile_size, overlap=16, min_object_size=5)
    result = match_objects(truth, labels, 0.7)
    assert result.false_positives == 0 and result.false_negatives == 0
    assert labels.max() == truth.max()
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))  # consecutive ids


def test_stack_ids_are_unique_across_planes():
    image, _ = touching_ellipses((96, 96))
    stack = np.stack([image, image[::-1], image])
    labels = oracle_segmenter().segment(stack)
    per_plane = [set(np.unique(p)) - {0} for p in labels]
    assert (
        all(per_plane) and not (per_plane[0] & per_plane[1]) and not (per_plane[1] & per_plane[2])
    )
    assert labels.max() == sum(len(p) for p in per_plane)
    assert labels.dtype == np.uint8


def test_small_objects_are_dropped_and_ids_stay_consecutive():
    probs = np.zeros((3, 40, 40), np.float32)
    probs[0] = 1
    for y, x, r in [(10, 10, 6), (30, 30, 6), (30, 8, 1)]:
        probs[:, y - r : y + r + 1, x - r : x + r + 1] = [[[0]], [[1]], [[0]]]
    ids = objects_from_probabilities(probs, min_size=20)
    assert ids.max() == 2
    assert set(np.unique(ids)) == {0, 1, 2}


def test_thin_bridges_between_touching_interiors_do_not_merge_objects():
    probs = np.zeros((3, 40, 60), np.float32)
    probs[0] = 1
    for cx in (18, 40):
        probs[:, 8:32, cx - 10 : cx + 11] = [[[0]], [[1]], [[0]]]
    probs[:, 19:21, 28:31] = [[[0]], [[1]], [[0]]]  # a 2-pixel bridge of interior
    probs[:, 30:33, 2:5] = [[[0]], [[1]], [[0]]]  # a tiny object: its seed must survive
    assert objects_from_probabilities(probs, min_size=5, seed_erosion=0).max() == 2
    assert objects_from_probabilities(probs, min_size=5, seed_erosion=2).max() == 3


def test_object_model_file_restores_object_behaviour(tmp_path):
    seg = Segmenter.create(task="objects", base_width=4, depth=2)
    loaded = Segmenter.load(seg.save(tmp_path / "objects.safetensors"))
    assert loaded.is_objects and loaded.config.names == ("background", "interior", "boundary")
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    assert loaded.predict_proba(image).shape == (3, 32, 32)
    assert loaded.segment(image).dtype.kind == "u"


def test_object_mode_needs_an_object_model():
    scene = nuclei_scene((64, 64), seed=1)
    seg = Segmenter.create(base_width=4, depth=2)
    with pytest.raises(ValueError, match="task='objects'"):
        seg.train(
            scene.image,
            scene.painted_objects,
            TrainConfig(mode="objects", max_epochs=1),
            progress=False,
        )


def test_metrics_match_one_to_one():
    truth = np.zeros((10, 10), np.uint8)
    truth[:5, :5], truth[5:, 5:] = 1, 2
    predicted = np.zeros_like(truth)
    predicted[:5, :5] = 7  # perfect
    predicted[5:, 5:7] = 3  # too small: IoU 0.4
    result = match_objects(truth, predicted, 0.5)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (1, 1, 1)
    assert object_f1(truth, truth) == 1.0


@pytest.mark.slow
def test_touching_nuclei_are_separated_after_short_training():
    scene = nuclei_scene((512, 512), seed=1)
    seg = Segmenter.create(task="objects", device="cpu")
    seg.train(
        scene.image,
        scene.painted_objects,
        TrainConfig(max_seconds=None, max_epochs=5),
        progress=False,
    )
    labels = seg.segment(scene.image)
    assert object_f1(scene.instances, labels, 0.5) >= 0.9


def first_objects_from_label_one(instances, n_objects):
    """A painting as napari's defaults invite: objects numbered 1, 2, 3, ... and no background."""
    painted = np.zeros(instances.shape, np.uint16)
    for number, object_id in enumerate(np.unique(instances[instances > 0])[:n_objects], 1):
        painted[instances == object_id] = number
    return painted


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_an_object_painted_as_label_one_is_reported_when_training_starts(spatial_dims):
    scene = nuclei_scene((64, 64), seed=1)
    painted = first_objects_from_label_one(scene.instances, 4)
    image = scene.image
    if spatial_dims == 3:  # painted on the middle plane of a short stack
        image = np.stack([scene.image] * 8)
        painted = np.stack([np.zeros_like(painted)] * 3 + [painted] + [np.zeros_like(painted)] * 4)
    seg = Segmenter.create(1, 3, task="objects", spatial_dims=spatial_dims, base_width=4, depth=2)
    config = TrainConfig(
        max_seconds=None,
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=2,
        patch_size=32,
        volume_patch_size=(8, 32, 32),
    )
    events = seg.train_iter(image, painted, config)
    started = next(events)
    assert len(started.paint_notes) == 1 and "label 1 is the background" in started.paint_notes[0]
    done = [event for event in events if isinstance(event, TrainingDone)]
    assert started.paint_notes[0] in done[0].history.warnings

    painted[painted == 1] = 9  # the first object renumbered, background strokes added
    painted[(painted == 0) & (np.arange(64)[:, None] % 16 == 8)] = 1
    events = seg.train_iter(image, painted, config)
    assert next(events).paint_notes == ()
    events.close()
