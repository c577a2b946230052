import numpy as np
import pytest

from napari_unetseg.core import InputError
from napari_unetseg.core.layout import guess_axes, resolve_layout


@pytest.mark.parametrize(
    ("shape", "channels", "axes"),
    [
        ((64, 80), 1, "YX"),
        ((5, 64, 80), 1, "ZYX"),
        ((2, 5, 64, 80), 1, "TZYX"),
        ((64, 80, 3), 3, "YXC"),
        ((64, 80, 4), 4, "YXC"),
        ((2, 64, 80), 2, "CYX"),
        ((5, 2, 64, 80), 2, "ZCYX"),
        ((5, 64, 80, 3), 3, "ZYXC"),
        ((2, 7, 64, 80), 2, "CZYX"),
    ],
)
def test_axes_are_guessed_from_the_model_channels(shape, channels, axes):
    assert guess_axes(shape, channels) == axes


@pytest.mark.parametrize(
    ("shape", "channels", "message"),
    [
        ((3, 64, 3), 3, "ambiguous"),
        ((2, 2, 64, 80), 2, "ambiguous"),
        ((64, 80), 3, "expects 3 channels"),
        ((64, 80, 3), 1, "looks like RGB"),
        ((5, 64, 80), 3, "no axis"),
        ((64,), 1, "at least 2"),
        ((2, 2, 2, 64, 80), 1, "pass axes"),
    ],
)
def test_unclear_or_wrong_shapes_explain_themselves(shape, channels, message):
    with pytest.raises(InputError, match=message):
        guess_axes(shape, channels)


def test_named_axes_are_checked_and_planes_are_read_as_cyx():
    image = np.arange(2 * 3 * 16 * 20).reshape(2, 16, 20, 3)
    layout = resolve_layout(image, 3, axes="zyxc")
    assert layout.axes == "ZYXC"
    assert layout.output_shape == (2, 16, 20)
    plane = layout.read_plane(image, (1,))
    assert plane.shape == (3, 16, 20)
    np.testing.assert_array_equal(plane[2], image[1, :, :, 2])
    with pytest.raises(InputError, match="2 channel"):
        resolve_layout(np.zeros((2, 16, 16)), 3, axes="CYX")
    with pytest.raises(InputError, match="last two"):
        resolve_layout(np.zeros((16, 16, 4)), 1, axes="YXZ")


@pytest.mark.parametrize("dtype", [np.complex64, bool])
def test_complex_and_boolean_images_are_refused(dtype):
    with pytest.raises(InputError, match="dtype"):
        resolve_layout(np.zeros((32, 32), dtype), 1)
