"""The command line: headless demo, train, segment, info."""

import os
import re
import sys

import numpy as np
import pytest

from napari_unetseg.__main__ import main, no_display_reason, run_headless_demo
from napari_unetseg.core.synthetic import nuclei_scene


def test_headless_demo_trains_and_reports_dice(capsys):
    result = run_headless_demo(seconds=2)
    out = capsys.readouterr().out
    assert "Foreground Dice on the unpainted pixels" in out
    assert 0.0 <= result["dice_unpainted"] <= 1.0 and result["steps"] >= 1


def test_train_segment_info_round_trip(tmp_path, capsys):
    scene = nuclei_scene((64, 64), seed=3)
    np.save(tmp_path / "image.npy", scene.image)
    np.save(tmp_path / "labels.npy", scene.painted)
    model = tmp_path / "model.safetensors"
    assert (
        main(
            [
                "train",
                "--image",
                str(tmp_path / "image.npy"),
                "--labels",
                str(tmp_path / "labels.npy"),
                "--output",
                str(model),
                "--seconds",
                "2",
            ]
        )
        == 0
    )
    assert model.exists()
    assert main(["segment", str(model), str(tmp_path / "image.npy")]) == 0
    out_file = tmp_path / "image_labels.tif"
    assert out_file.exists()
    import tifffile

    assert tifffile.imread(out_file).shape == (64, 64)
    # A second run does not overwrite without --overwrite.
    before = out_file.stat().st_mtime_ns
    assert main(["segment", str(model), str(tmp_path / "image.npy")]) == 0
    assert out_file.stat().st_mtime_ns == before
    assert main(["info", str(model)]) == 0
    assert "U-Net (native)" in capsys.readouterr().out


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a model")
    assert main(["info", str(bad)]) == 1
    assert "broken.pth" in capsys.readouterr().err


def _train_args(tmp_path, *extra):
    scene = nuclei_scene((64, 64), seed=3)
    np.save(tmp_path / "image.npy", scene.image)
    np.save(tmp_path / "labels.npy", scene.painted)
    return [
        "train",
        "--image",
        str(tmp_path / "image.npy"),
        "--labels",
        str(tmp_path / "labels.npy"),
        "--seconds",
        "600",
        *extra,
    ]


@pytest.fixture
def no_training(monkeypatch):
    """Training would spend its budget: these checks must come first."""
    from napari_unetseg.core import Segmenter

    def train(*args, **kwargs):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(Segmenter, "train", train)


def test_train_with_a_missing_weights_file_is_an_error(tmp_path, capsys, no_training):
    args = _train_args(tmp_path, "--weights", str(tmp_path / "typo.safetensors"))
    assert main([*args, "--output", str(tmp_path / "out.safetensors")]) == 1
    assert "typo.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("model.txt", r"\.safetensors"),
        ("notes.txt/model.safetensors", "cannot be written"),
        ("model.pt", r"model\.json"),  # a JSON file of the user's beside it
    ],
)
def test_train_checks_its_output_before_training(tmp_path, capsys, no_training, output, message):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    (tmp_path / "model.json").write_text('{"my": "notes"}')
    assert main([*_train_args(tmp_path), "--output", str(tmp_path / output)]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_train_refuses_a_read_only_output_folder(tmp_path, capsys, no_training):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        output = str(folder / "model.safetensors")
        assert main([*_train_args(tmp_path), "--output", output]) == 1
    finally:
        folder.chmod(0o755)
    assert "cannot be written" in capsys.readouterr().err


def test_demo_without_a_display_suggests_headless(monkeypatch, capsys):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["demo"]) == 2
    assert "--headless" in capsys.readouterr().err
    assert no_display_reason({"DISPLAY": ":0"}, "linux") is None
    assert no_display_reason({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert no_display_reason({}, "darwin") is None
