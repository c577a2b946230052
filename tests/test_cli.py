"""The command line: headless demo, train, segment, info."""

import numpy as np

from napari_unetseg.__main__ import main, run_headless_demo
from napari_unetseg.core.synthetic import nuclei_scene


def test_headless_demo_trains_and_reports_dice(capsys):
    result = run_headless_demo(seconds=2)
    out = capsys.readouterr().out
    assert "Foreground Dice on the right half" in out and "Kromp" in out
    assert 0.0 <= result["dice_right_half"] <= 1.0 and result["steps"] >= 1


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
