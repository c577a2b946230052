import numpy as np
import pytest

from napari_unetseg.core import InputError, TrainConfig
from napari_unetseg.core.targets import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    check_painted_classes,
    label_one_note,
    make_targets,
    paint_notes,
)


def test_sparse_labels_shift_classes_and_mask_unpainted():
    labels = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    targets = make_targets(labels, TrainConfig(mode="sparse"), 3)
    np.testing.assert_array_equal(targets.mask, labels > 0)
    np.testing.assert_array_equal(targets.classes[targets.mask], [0, 1, 2, 0])


def test_dense_labels_count_every_pixel():
    labels = np.array([[0, 1], [2, 0]], np.uint8)
    targets = make_targets(labels, TrainConfig(mode="dense"), 3)
    assert targets.mask.all()
    np.testing.assert_array_equal(targets.classes, labels)


def test_touching_objects_get_a_boundary_between_them():
    labels = np.ones((12, 12), np.uint16)
    labels[2:10, 2:6] = 2
    labels[2:10, 6:10] = 3  # touches object 2 along a vertical line
    labels[0, :] = 0  # unpainted row
    targets = make_targets(labels, TrainConfig(mode="objects"), 3)
    assert targets.classes[5, 5] == BOUNDARY and targets.classes[5, 6] == BOUNDARY
    assert targets.classes[5, 3] == INTERIOR
    assert targets.classes[5, 2] == BOUNDARY  # edge against background
    assert not targets.mask[0].any()
    dense = make_targets(labels - 1, TrainConfig(mode="objects-dense"), 3)
    assert dense.mask.all() and dense.classes[5, 5] == BOUNDARY


def test_unpainted_pixels_touching_a_whole_painted_object_count_as_background():
    labels = np.zeros((9, 9), np.uint16)
    labels[3:6, 3:6] = 2  # one whole object, nothing else painted
    labels[8, 8] = 1
    targets = make_targets(labels, TrainConfig(mode="objects"), 3)
    ring = np.zeros((9, 9), bool)
    ring[2, 3:6] = ring[6, 3:6] = ring[3:6, 2] = ring[3:6, 6] = True  # its 4-neighbours
    np.testing.assert_array_equal(targets.mask, (labels > 0) | ring)
    assert (targets.classes[ring] == BACKGROUND).all()
    assert targets.classes[4, 4] == INTERIOR and targets.classes[3, 3] == BOUNDARY
    assert not targets.mask[2, 2]  # a diagonal neighbour is left unknown
    plain = make_targets(labels, TrainConfig(mode="objects", background_around_objects=False), 3)
    np.testing.assert_array_equal(plain.mask, labels > 0)


def test_the_ring_never_overrides_paint_and_stays_in_its_plane():
    from napari_unetseg.core.volumes import volume_object_classes

    labels = np.zeros((3, 8, 8), np.uint16)
    labels[1, 2:5, 2:5] = 2
    labels[1, 2:5, 5:7] = 3  # touches object 2: its pixels keep their own classes
    classes, mask = volume_object_classes(labels, TrainConfig(mode="objects"))
    assert not mask[0].any() and not mask[2].any()  # planes above and below stay unknown
    assert mask[1, 1, 2:7].all() and (classes[1, 1, 2:7] == BACKGROUND).all()
    assert (classes[1, 2:5, 5] == BOUNDARY).all()  # object 3's edge, not a ring
    assert not mask[1, 6, 0] and not mask[1, 0, 0]


def test_labels_are_never_modified():
    labels = np.zeros((8, 8), np.uint8)
    labels[:4] = 1
    labels[4:] = 2
    before = labels.copy()
    for mode in ("sparse", "dense", "objects", "objects-dense"):
        make_targets(labels, TrainConfig(mode=mode), 3)
    np.testing.assert_array_equal(labels, before)


@pytest.mark.parametrize(
    ("labels", "mode", "n_outputs", "message"),
    [
        (np.zeros((4, 4), np.uint8), "sparse", 2, "nothing is painted"),
        (np.full((4, 4), 2, np.uint8), "sparse", 2, "only label 2 is painted.*background"),
        (np.full((4, 4), 1, np.uint8), "sparse", 2, "only label 1 is painted.*class"),
        (
            np.array([[1, 2], [3, 0]], np.uint8),
            "sparse",
            2,
            "label 3 is painted but the model has 2 classes",
        ),
        (np.array([[0, 1], [4, 0]], np.uint8), "dense", 3, "label 4 appears"),
        (np.zeros((4, 4), np.uint8), "dense", 2, "only the value 0"),
        (np.full((4, 4), 5, np.uint8), "objects", 3, "no background"),
        (np.full((4, 4), 1, np.uint8), "objects", 3, "no object"),
    ],
)
def test_painting_mistakes_explain_what_to_do(labels, mode, n_outputs, message):
    with pytest.raises(InputError, match=message):
        check_painted_classes([labels], TrainConfig(mode=mode), n_outputs)


def disc(shape, centre, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def objects_painted_from_label_one(shape=(80, 80)):
    """Four nuclei painted as 1, 2, 3, 4 (napari's first label is 1), no background."""
    painted = np.zeros(shape, np.uint16)
    for number, centre in enumerate([(15, 15), (15, 60), (60, 15), (60, 60)], start=1):
        painted[disc(shape, centre, 8)] = number
    return painted


def test_label_one_painted_like_an_object_gets_a_note():
    painted = objects_painted_from_label_one()
    note = label_one_note([painted])
    assert note is not None and "label 1 is the background" in note and "from 2" in note
    assert paint_notes([painted], TrainConfig(mode="objects")) == [note]
    # the same paint as classes, or dense instances: label 1 means something else there
    assert paint_notes([painted], TrainConfig(mode="sparse")) == []
    assert paint_notes([painted], TrainConfig(mode="objects-dense")) == []


def test_background_strokes_get_no_note():
    painted = objects_painted_from_label_one()
    painted[painted == 1] = 5  # the first object renumbered
    painted[38:41, 5:75] = 1  # one long background stroke
    assert label_one_note([painted]) is None
    painted[5:8, 30:45] = 1  # two short strokes: two shapes
    assert label_one_note([painted]) is None
    blob = objects_painted_from_label_one()
    blob[blob == 1] = 5
    blob[disc(blob.shape, (38, 38), 20) & (blob == 0)] = 1  # one dab far larger than an object
    assert label_one_note([blob]) is None


def test_label_one_note_looks_at_each_plane_of_a_stack():
    stack = np.zeros((3, 80, 80), np.uint16)
    stack[1] = objects_painted_from_label_one()
    assert label_one_note([stack]) is not None  # a volume's painted plane
    stack[2, 30:45, 30:45] = 1  # background on another plane too
    assert label_one_note([stack]) is None
