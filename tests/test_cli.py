"""The command line: headless demo, train, segment, info."""

import os
import re
import sys

import numpy as np
import pytest

from napari_unetseg.__main__ import main, no_display_reason, run_headless_demo
from napari_unetseg.core.synthetic import nuclei_scene


def test_headless_demo_trains_and_reports_dice(capsys):
    result = run_headless_demo(seconds=5)
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
    out_file = tmp_path / "image_unetseg.tif"
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


# --------------------------------------------------------------------------- segment


@pytest.fixture
def folder(tmp_path):
    """A model, an image, the user's painting of it and a damaged TIFF, as in the README."""
    import tifffile

    from napari_unetseg.core import Segmenter

    Segmenter.create(device="cpu", seed=0).save(tmp_path / "nuclei.safetensors")
    tifffile.imwrite(tmp_path / "a.tif", nuclei_scene((64, 64), seed=1).image)
    tifffile.imwrite(tmp_path / "a_labels.tif", nuclei_scene((64, 64), seed=1).painted)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not a TIFF")
    return tmp_path


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err


def test_segment_never_touches_paint_and_goes_past_a_bad_file(folder, capsys):
    import tifffile

    paint = (folder / "a_labels.tif").read_bytes()
    names = [str(folder / n) for n in ("a.tif", "a_labels.tif", "broken.tif")]  # what *.tif gives
    assert main(["segment", str(folder / "nuclei.safetensors"), *names]) == 1  # one failed
    captured = capsys.readouterr()
    _no_traceback(captured.err)
    assert (folder / "a_labels.tif").read_bytes() == paint
    assert tifffile.imread(folder / "a_unetseg.tif").shape == (64, 64)
    assert f"FAILED {folder / 'broken.tif'}: not a readable TIFF file" in captured.err
    assert "left out" in captured.out and "a_labels.tif" in captured.out
    assert "1 segmented, 0 already done, 1 failed, 1 left out." in captured.out
    assert not (folder / "a_labels_unetseg.tif").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.tif"], "missing.tif: no such file or folder."),
        (["nothing/*.tif"], "nothing/*.tif: no file matches this pattern."),
        (["notes.txt"], "notes.txt: not a supported image file"),
        (["a.tif", "--output-dir", "notes.txt"], "the output folder is a file"),
        (["x/a.npy", "y/a.npy", "--output-dir", "out"], "would get results of the same name"),
        (["a.tif", "--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_segment_failures_are_one_line(folder, capsys, monkeypatch, arguments, message):
    monkeypatch.chdir(folder)
    (folder / "notes.txt").write_text("not an image")
    for sub in ("x", "y"):
        (folder / sub).mkdir()
        np.save(folder / sub / "a.npy", np.zeros((32, 32), np.uint8))
    assert main(["segment", "nuclei.safetensors", *arguments]) == 1
    err = capsys.readouterr().err
    _no_traceback(err)
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (folder / "a_unetseg.tif").exists() and not (folder / "out").exists()


def test_a_missing_weights_file_is_one_line(folder, capsys):
    assert main(["segment", str(folder / "none.safetensors"), str(folder / "a.tif")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.safetensors" in err


def test_every_segment_option_shows_its_default():
    from napari_unetseg.__main__ import build_parser

    parser = build_parser()
    segment = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[
        "segment"
    ]
    options = [a for a in segment._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in options} >= {"output_dir", "format", "workers", "scheduler"}
    for action in options:
        assert action.help and "default" in action.help, action.dest


@pytest.mark.parametrize("output_format", ["npy", "zarr"])
def test_segment_writes_npy_and_zarr(folder, output_format):
    import zarr

    from napari_unetseg.core import Segmenter
    from napari_unetseg.core.batch import read_image

    out = folder / "out"
    arguments = [str(folder / "nuclei.safetensors"), str(folder / "a.tif"), "--output-dir"]
    assert main(["segment", *arguments, str(out), "--format", output_format]) == 0
    written = out / f"a_unetseg.{output_format}"
    labels = np.load(written) if output_format == "npy" else zarr.open_array(str(written))[:]
    expected = Segmenter.load(folder / "nuclei.safetensors").segment(read_image(folder / "a.tif"))
    assert np.array_equal(labels, expected)


def test_segment_on_a_running_scheduler(folder, capsys):
    distributed = pytest.importorskip("distributed")
    import tifffile

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        arguments = [str(folder / "nuclei.safetensors"), str(folder / "a.tif")]
        out = ["--output-dir", str(folder / "out"), "--scheduler", cluster.scheduler_address]
        assert main(["segment", *arguments, *out]) == 0
    assert tifffile.imread(folder / "out" / "a_unetseg.tif").shape == (64, 64)
    assert "1 segmented" in capsys.readouterr().out


def test_workers_and_scheduler_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["segment", "m", "a.tif", "--workers", "2", "--scheduler", "tcp://x:1"])
    assert stopped.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_split_rows_segments_one_zarr_image_and_refuses_objects(folder, capsys):
    import zarr

    from napari_unetseg.core import Segmenter

    image = nuclei_scene((100, 90), seed=2).image
    zarr.open_array(str(folder / "big.zarr"), mode="w", shape=image.shape, dtype=image.dtype)[:] = (
        image
    )
    model = str(folder / "nuclei.safetensors")
    split = ["--split-rows", "40", "--tile-size", "48", "--output-dir", str(folder / "out")]
    assert main(["segment", model, str(folder / "big.zarr"), *split]) == 0
    labels = zarr.open_array(str(folder / "out" / "big_unetseg.zarr"))[:]
    expected = Segmenter.load(model).segment(
        zarr.open_array(str(folder / "big.zarr")), tile_size=48
    )
    assert np.array_equal(labels, expected)
    assert main(["segment", model, str(folder / "big.zarr"), *split]) == 0  # exists: skipped
    assert "exists" in capsys.readouterr().out

    Segmenter.create(task="objects").save(folder / "objects.safetensors")
    objects = str(folder / "objects.safetensors")
    assert main(["segment", objects, str(folder / "big.zarr"), *split, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "object model cannot split" in err
    assert main(["segment", model, str(folder / "big.zarr"), str(folder / "a.tif"), *split]) == 1
    assert "segments one image" in capsys.readouterr().err


@pytest.mark.slow  # starts two local clusters of worker processes
def test_workers_run_the_batch_and_a_split_image_in_worker_processes(folder):
    pytest.importorskip("distributed")
    import tifffile
    import zarr

    from napari_unetseg.core import Segmenter

    model = str(folder / "nuclei.safetensors")
    out = ["--output-dir", str(folder / "out"), "--workers", "2", "--tile-size", "48"]
    assert main(["segment", model, str(folder / "a.tif"), *out]) == 0
    expected = Segmenter.load(model).segment(tifffile.imread(folder / "a.tif"), tile_size=48)
    assert np.array_equal(tifffile.imread(folder / "out" / "a_unetseg.tif"), expected)

    image = nuclei_scene((100, 90), seed=2).image
    zarr.open_array(str(folder / "big.zarr"), mode="w", shape=image.shape, dtype=image.dtype)[:] = (
        image
    )
    assert main(["segment", model, str(folder / "big.zarr"), *out, "--split-rows", "30"]) == 0
    labels = zarr.open_array(str(folder / "out" / "big_unetseg.zarr"))[:]
    assert np.array_equal(labels, Segmenter.load(model).segment(image, tile_size=48))


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


def test_train_a_3d_model_on_a_stack_and_segment_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    zz, yy, xx = np.indices((8, 48, 48))
    inside = ((zz - 4) / 3) ** 2 + ((yy - 24) / 10) ** 2 + ((xx - 24) / 10) ** 2 <= 1
    image = (inside + rng.normal(0, 0.2, inside.shape)).astype(np.float32)
    painted = np.zeros(inside.shape, np.uint8)
    painted[4][inside[4]] = 2
    painted[4][~inside[4]] = 1
    np.save(tmp_path / "stack.npy", image)
    np.save(tmp_path / "stack_labels.npy", painted)
    model = tmp_path / "volume.safetensors"
    args = ["train", "--image", str(tmp_path / "stack.npy"), "--labels"]
    args += [str(tmp_path / "stack_labels.npy"), "--output", str(model), "--seconds", "2"]
    assert main([*args, "--voxel-size", "2", "0.5", "0.5"]) == 0  # a stack: 3-D by default
    assert main(["info", str(model)]) == 0
    assert "3-D: voxel size (2.0, 0.5, 0.5)" in capsys.readouterr().out
    assert main(["segment", str(model), str(tmp_path / "stack.npy")]) == 0
    import tifffile

    assert tifffile.imread(tmp_path / "stack_unetseg.tif").shape == (8, 48, 48)


@pytest.mark.parametrize(
    ("shape", "extra", "seconds", "members"),
    [
        ((32, 32), [], 60.0, 1),
        ((4, 32, 32), [], 180.0, 2),
        ((4, 32, 32), ["--seconds", "7"], 7.0, 2),
        ((4, 32, 32), ["--members", "1"], 180.0, 1),
    ],
)
def test_train_gives_a_3d_model_the_widgets_longer_budget_and_two_networks(
    tmp_path, monkeypatch, shape, extra, seconds, members
):
    from napari_unetseg.core import Segmenter

    budgets = []

    class Captured(Exception):
        pass

    def train(self, images, labels, config, **kwargs):
        budgets.append((config.max_seconds, self.config.members))
        raise Captured

    monkeypatch.setattr(Segmenter, "train", train)
    np.save(tmp_path / "image.npy", np.zeros(shape, np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(shape, np.uint8))
    args = ["train", "--image", str(tmp_path / "image.npy"), "--labels"]
    args += [str(tmp_path / "labels.npy"), "--output", str(tmp_path / "m.safetensors"), *extra]
    with pytest.raises(Captured):
        main(args)
    assert budgets == [(seconds, members)]
