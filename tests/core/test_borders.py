"""The border of a two-class model moved onto the brightness step between the painted classes."""

import numpy as np
import pytest

from napari_unetseg.core.borders import (
    MAX_SHIFT,
    brightness_aligned_shift,
    brightness_separation,
    separating_channel,
)


def wall_scene(rng, half_width=2.0, blur=1.0):
    """A bright wall along x = 0 on a 1-D profile repeated in rows; logits that call the wall
    twice as wide as it is (the network's habit in the unpainted margin)."""
    x = np.tile(np.arange(-20, 21, dtype=float), 200)
    brightness = 1 / (1 + np.exp((np.abs(x) - half_width) / (blur / 2)))
    brightness += rng.normal(0, 0.05, x.shape)
    logits = 2 * half_width - np.abs(x)  # zero at twice the half-width
    painted = np.full(x.shape, -1)
    painted[x == 0] = 1  # the wall's middle line
    painted[np.abs(x) >= 2 * half_width + 4] = 0  # background well away from it
    return x, brightness[:, None], logits, painted


def test_a_too_thick_wall_is_thinned_to_its_brightness_step(rng):
    x, brightness, logits, painted = wall_scene(rng)
    shift = brightness_aligned_shift(logits, brightness, painted, rng)
    assert shift < 0
    wall = logits + shift > 0
    # the wall is now as wide as its bright part: |x| <= 2, not |x| < 4
    assert set(np.unique(np.abs(x[wall]))) <= {0, 1, 2}
    assert 2 in np.abs(x[wall])


def test_no_shift_when_the_painted_classes_look_alike(rng):
    x, _, logits, painted = wall_scene(rng)
    noise = rng.random((len(x), 1))
    assert brightness_aligned_shift(logits, noise, painted, rng) == 0.0


def test_no_shift_ever_turns_painted_pixels_to_the_other_class(rng):
    x, brightness, logits, painted = wall_scene(rng)
    # paint the wall out to |x| = 3, where it is dim: thinning it to the step would lose paint
    painted = painted.copy()
    painted[np.abs(x) <= 3] = 1
    shift = brightness_aligned_shift(logits, brightness, painted, rng)
    assert np.all(logits[painted == 1] + shift > 0)
    assert np.all(logits[painted == 0] + shift <= 0)


def test_shifts_stay_within_the_range(rng):
    _, brightness, logits, painted = wall_scene(rng)
    shift = brightness_aligned_shift(logits * 0.01, brightness, painted, rng)
    assert -MAX_SHIFT <= shift <= MAX_SHIFT


@pytest.mark.parametrize("flip", [False, True])
def test_separation_is_the_same_for_bright_and_dark_foregrounds(flip):
    values = np.r_[np.zeros(50), np.ones(50)]
    foreground = values > 0.5
    if flip:
        values = -values
    assert brightness_separation(values, foreground) == pytest.approx(1.0)
    assert brightness_separation(np.ones(100), foreground) == pytest.approx(0.5)


def test_the_separating_channel_is_found_among_several(rng):
    painted = np.r_[np.zeros(100, int), np.ones(100, int), np.full(50, -1)]
    channels = rng.random((250, 3))
    channels[:, 2] += painted == 1
    assert separating_channel(channels, painted, rng) == 2
    assert separating_channel(channels[:, :2], painted, rng) is None


def test_the_paint_of_small_class_dtypes_is_read_as_classes(rng):
    """Training planes keep classes as uint8: unpainted pixels must not read as a class."""
    from napari_unetseg.core.prior import crop_windows, painted_pixels
    from napari_unetseg.core.sampling import TrainingPlane

    classes = np.zeros((32, 32), np.uint8)
    classes[:, 16:] = 1
    mask = np.zeros((32, 32), bool)
    mask[4, :] = True
    plane = TrainingPlane(
        rng.random((1, 32, 32), dtype=np.float32), classes, mask, np.zeros_like(mask)
    )
    pixels = painted_pixels([plane], crop_windows([plane], rng))
    assert sorted(np.unique(pixels.painted)) == [-1, 0, 1]
    assert (pixels.painted >= 0).sum() == 32


def test_pixel_noise_does_not_hide_a_brightness_step_from_the_smoothed_image(rng):
    _, brightness, logits, painted = wall_scene(rng)
    noisy = brightness + rng.normal(0, 0.6, brightness.shape)
    assert brightness_aligned_shift(logits, noisy, painted, rng) == 0.0
    assert brightness_aligned_shift(logits, noisy, painted, rng, smoothed=brightness) < 0


def wall_widths(x, logits, shift):
    return set(np.unique(np.abs(x[logits + shift > 0])))


@pytest.mark.parametrize("dark", [False, True])
def test_a_wall_never_grows_past_the_network_s_own_border(rng, dark):
    """Blur makes a wall, bright or dark, look wider than it is: the step thins, and widens only
    to undo the class-share step's shrink."""
    x, brightness, logits, painted = wall_scene(rng)
    if dark:  # the background is the bright class now
        brightness = 1 - brightness
    too_thin = logits - 3  # |x| < 1, where the wall's band is |x| <= 2
    shift = brightness_aligned_shift(too_thin, brightness, painted, rng)
    assert wall_widths(x, too_thin, shift) == {0}
    # the network called |x| < 4 and the class-share step took 3 off: the border may move back
    shift = brightness_aligned_shift(too_thin, brightness, painted, rng, share_shift=-3.0)
    assert {0, 1} <= wall_widths(x, too_thin, shift) <= {0, 1, 2, 3}
    # drawn too thick (|x| < 4): thinned onto the band's edge
    shift = brightness_aligned_shift(logits, brightness, painted, rng)
    assert {0, 1} <= wall_widths(x, logits, shift) <= {0, 1, 2}
