"""New 2-D models start from weights trained on synthetic scenes (core.starting_weights)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from napari_unetseg.core import ConfigError, NormalizationConfig, Segmenter
from napari_unetseg.core.metrics import dice
from napari_unetseg.core.starting_weights import STARTING_WEIGHTS_FILE
from napari_unetseg.core.synthetic import nuclei_scene, varied_planes

FIRST = "inc.double_conv.0.weight"
REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_file_holds_only_the_default_models_tensors():
    state = load_file(STARTING_WEIGHTS_FILE)
    expected = Segmenter.create(start="random", device="cpu").model.state_dict()
    assert set(state) == set(expected)
    assert all(state[k].shape == expected[k].shape for k in state)
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_a_default_model_starts_from_the_file_and_says_so():
    seg = Segmenter.create(device="cpu")
    state = load_file(STARTING_WEIGHTS_FILE)
    for key, value in seg.model.state_dict().items():
        torch.testing.assert_close(value.cpu(), state[key])
    assert seg.config.started_from == "synthetic scenes"
    assert "started from weights trained on synthetic scenes" in seg.describe()
    assert not seg.is_trained


def test_random_start_ignores_the_file_and_follows_the_seed():
    a = Segmenter.create(start="random", seed=3, device="cpu").model.state_dict()
    b = Segmenter.create(start="random", seed=3, device="cpu").model.state_dict()
    torch.testing.assert_close(a, b)
    assert not torch.equal(a[FIRST], load_file(STARTING_WEIGHTS_FILE)[FIRST])
    assert Segmenter.create(start="random").config.started_from == ""


def test_the_starting_weights_already_find_bright_nuclei():
    # A broken or shuffled file would not: a random model scores near the foreground share.
    scene = nuclei_scene((128, 128), seed=4)
    found = Segmenter.create(device="cpu").segment(scene.image) == 1
    assert dice(found, scene.classes > 0) > 0.6


def test_several_channels_share_the_first_layer_so_a_grey_rgb_image_starts_as_its_grey_plane():
    scene = nuclei_scene((64, 64), seed=5)
    grey = Segmenter.create(device="cpu")
    rgb = Segmenter.create(in_channels=3, device="cpu")
    assert rgb.config.started_from == "synthetic scenes"
    torch.testing.assert_close(
        rgb.model.state_dict()[FIRST], grey.model.state_dict()[FIRST].repeat(1, 3, 1, 1) / 3
    )
    as_rgb = np.repeat(scene.image[..., None], 3, axis=-1)
    np.testing.assert_allclose(
        rgb.predict_proba(as_rgb, axes="YXC"), grey.predict_proba(scene.image), atol=0.02
    )


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"spatial_dims": 3}, "2-D"),
        ({"task": "objects"}, "two-class"),
        ({"n_classes": 3}, "two-class"),
        ({"base_width": 8}, "default width and depth"),
        ({"depth": 3}, "default width and depth"),
        ({"normalization": NormalizationConfig(method="zscore")}, "percentile"),
    ],
)
def test_models_the_file_does_not_fit_start_random_or_refuse_when_asked(options, reason):
    assert Segmenter.create(device="cpu", **options).config.started_from == ""
    with pytest.raises(ConfigError, match=reason):
        Segmenter.create(device="cpu", start="synthetic", **options)


def test_an_unknown_start_is_a_clear_error():
    with pytest.raises(ConfigError, match="one of 'auto', 'synthetic', 'random'"):
        Segmenter.create(start="imagenet")  # type: ignore[arg-type]


def test_the_start_is_saved_with_the_model_and_omitted_for_random_weights(tmp_path):
    path = Segmenter.create(device="cpu").save(tmp_path / "start.safetensors")
    assert Segmenter.load(path, device="cpu").config.started_from == "synthetic scenes"
    plain = Segmenter.create(start="random", device="cpu").save(tmp_path / "plain.safetensors")
    with safe_open(str(plain), "pt") as f:
        settings = json.loads(f.metadata()["napari_unetseg.config"])
    assert "started_from" not in settings  # older versions still read the file


def test_varied_planes_are_reproducible_and_hold_both_classes():
    images, labels = varied_planes(6, seed=9, size=64)
    again, _ = varied_planes(6, seed=9, size=64)
    np.testing.assert_array_equal(images, again)
    assert images.shape == labels.shape == (6, 64, 64) and images.dtype == np.float32
    assert images.min() == 0 and images.max() == pytest.approx(1000)
    for plane in labels:
        assert set(np.unique(plane)) == {1, 2}


def test_the_maker_script_writes_weights_a_model_can_load(tmp_path):
    out = tmp_path / "start.safetensors"
    script = REPO / "scripts" / "make_starting_weights.py"
    args = ["--out", str(out), "--planes", "2", "--epochs", "1", "--size", "64"]
    done = subprocess.run(
        [sys.executable, str(script), *args, "--steps-per-epoch", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "2 steps" in done.stdout
    state = load_file(out)
    assert set(state) == set(load_file(STARTING_WEIGHTS_FILE))
