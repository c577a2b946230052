"""Result layers are written in place: one plane of a stack costs one plane."""

from __future__ import annotations

import numpy as np

from napari_unetseg._widgets._layers import put_labels_plane


def test_one_plane_is_written_in_place(viewer):
    image = viewer.add_image(np.zeros((3, 40, 50), np.float32), name="stack")
    previous = viewer.add_labels(np.full((3, 40, 50), 7, np.uint8), name="stack segmentation")
    data_before = previous.data
    plane = np.ones((40, 50), np.uint8)
    layer = put_labels_plane(viewer, image, (1,), plane, (3, 40, 50))
    assert layer is previous
    assert layer.data is data_before, "no new stack-sized array"
    assert (layer.data[1] == 1).all()
    assert (layer.data[0] == 7).all() and (layer.data[2] == 7).all()


def test_a_missing_or_misfit_layer_is_made_with_the_plane(viewer):
    image = viewer.add_image(np.zeros((3, 40, 50), np.float32), name="stack")
    viewer.add_labels(np.zeros((40, 50), np.uint8), name="stack segmentation")  # wrong shape
    layer = put_labels_plane(viewer, image, (2,), np.full((40, 50), 3, np.uint16), (3, 40, 50))
    assert layer.data.shape == (3, 40, 50)
    assert (layer.data[2] == 3).all() and not layer.data[:2].any()
    assert [lay.name for lay in viewer.layers].count("stack segmentation") == 1


def test_a_wider_dtype_widens_the_layer(viewer):
    image = viewer.add_image(np.zeros((40, 50), np.float32), name="flat")
    viewer.add_labels(np.zeros((40, 50), np.uint8), name="flat segmentation")
    layer = put_labels_plane(viewer, image, (), np.full((40, 50), 300, np.uint16), (40, 50))
    assert layer.data.dtype == np.uint16 and (layer.data == 300).all()
