"""A two-class model whose foreground is a wall network gets thinner walls after training."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from napari_unetseg.core import prior, train, walls
from napari_unetseg.core.sampling import TrainingPlane
from napari_unetseg.core.training_events import TrainingHistory


def voronoi_walls(size=128, cells=25, seed=0):
    """One-pixel walls between Voronoi cells, and each pixel's distance to them."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, size, (cells, 2))
    yy, xx = np.mgrid[:size, :size]
    distances = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    wall = find_boundaries(np.argmin(distances, -1), mode="inner")
    return wall, ndi.distance_transform_edt(~wall)


def blobs(size=128, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for y, x in rng.integers(10, size - 10, (12, 2)):
        mask |= (yy - y) ** 2 + (xx - x) ** 2 < 36
    return mask, ndi.distance_transform_edt(~mask)


def test_walls_cut_the_background_into_pieces_and_nuclei_do_not():
    _wall, distance = voronoi_walls()
    assert walls.background_split(distance < 2.5) > 0.8
    assert walls.background_split(np.stack([distance < 2.5] * 3)) > 0.8  # plane by plane
    nuclei, _ = blobs()
    assert walls.background_split(nuclei) < 0.01
    assert walls.background_split(np.ones((8, 8), bool)) == 0.0  # no background at all


def test_a_wall_network_moves_inward_unless_its_paint_would_be_lost():
    wall, distance = voronoi_walls()
    logits = (2.5 - distance).ravel()  # walls five pixels thick
    painted = np.where(wall, 1, np.where(distance > 6, 0, -1)).ravel()
    shapes = [wall.shape]
    assert walls.wall_shift(logits, shapes, painted) == walls.WALL_SHIFT
    nuclei, nuclei_distance = blobs()
    nuclei_logits = np.where(nuclei, 3.0, 2.5 - nuclei_distance).ravel()
    nuclei_paint = np.where(nuclei, 1, -1).ravel()
    assert walls.wall_shift(nuclei_logits, shapes, nuclei_paint) == 0.0
    # painted wall pixels only just called wall: the move stops before it loses them
    weak = np.where(wall.ravel(), 1.0, logits)
    assert walls.wall_shift(weak, shapes, painted) == -0.75
    assert walls.wall_shift(weak, shapes, painted, max_paint_lost=1.0) == walls.WALL_SHIFT
    # a few weak painted wall pixels may go (up to MAX_WALL_PAINT_LOST), more may not
    painted_wall = np.flatnonzero(painted == 1)
    for share, expected in ((0.03, walls.WALL_SHIFT), (0.1, -0.75)):
        some_weak = logits.copy()
        some_weak[painted_wall[: int(share * len(painted_wall))]] = 1.0
        assert walls.wall_shift(some_weak, shapes, painted) == expected
    assert walls.wall_shift(logits, shapes, np.full_like(painted, -1)) == 0.0


class FixedLogits(torch.nn.Module):
    """A two-class "network" whose foreground logit is a fixed map, plus its output bias."""

    def __init__(self, foreground_logit):
        super().__init__()
        self.outc = torch.nn.Module()
        self.outc.conv = torch.nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.outc.conv.bias.zero_()
        self.register_buffer("foreground", torch.as_tensor(foreground_logit, dtype=torch.float32))

    def forward(self, x):
        bias = self.outc.conv.bias
        background = torch.zeros_like(self.foreground) + bias[0]
        return torch.stack([background, self.foreground + bias[1]])[None]


@pytest.mark.parametrize("scene", ["walls", "dark walls", "nuclei"])
def test_the_class_share_step_draws_walls_thinner_and_leaves_nuclei(scene, rng):
    if "walls" in scene:
        structure, distance = voronoi_walls()
        logit = 4.0 - distance  # walls drawn eight pixels thick
        painted = np.where(structure, 1, np.where(distance > 6, 0, -1))
    else:
        structure, distance = blobs()
        logit = np.where(structure, 3.0, 2.5 - distance)
        painted = np.where(structure, 1, np.where(distance > 6, 0, -1))
    image = ndi.gaussian_filter(np.where(structure, 1.0, 0.1), 1.5).astype(np.float32)
    if scene == "dark walls":
        image = 1.1 - image
    plane = TrainingPlane(
        image[None], np.maximum(painted, 0), painted >= 0, np.zeros(painted.shape, bool)
    )
    estimate = prior.class_share_shift(FixedLogits(logit), [plane], 1, torch.device("cpu"), rng)
    assert estimate is not None
    if "walls" in scene:
        assert estimate.wall_shift == walls.WALL_SHIFT
        assert estimate.border_shift <= walls.WALL_SHIFT  # the walls' part is in the border's
    else:
        assert estimate.wall_shift == 0.0
    off = prior.class_share_shift(
        FixedLogits(logit), [plane], 1, torch.device("cpu"), rng, align_borders=False
    )
    assert off is not None and off.wall_shift == 0.0 and off.border_shift == 0.0


def test_a_training_records_the_walls_move_and_says_it(nuclei_small, monkeypatch):
    from napari_unetseg.core import Segmenter, TrainConfig

    def fake(model, *args, **kwargs):  # a small move, which the held-out paint lets through
        shift = prior.foreground_shift(-0.25, 2, False)
        return prior.OutputShift(np.array([0.5, 0.5]), shift, -0.25, None, -0.25)

    monkeypatch.setattr(train, "class_share_shift", fake)
    seg = Segmenter.create(base_width=8, depth=3, device="cpu", seed=0)
    config = TrainConfig(
        max_seconds=None, max_epochs=5, steps_per_epoch=10, batch_size=4, patch_size=64
    )
    history = seg.train(nuclei_small.image, nuclei_small.painted, config, progress=False)
    assert history.class_shares_applied == 1.0
    assert history.wall_shift == -0.25 and history.border_shift == -0.25
    assert seg.config.training["wall_shift"] == -0.25
    note = history.adjustment_note(("background", "walls"))
    assert "looks like walls" in note and "0.25" in note and "brightness step" not in note
    assert "wall_shift" not in TrainingHistory(border_shift=0.5).summary()
