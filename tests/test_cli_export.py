"""``napari-unetseg export``: every format from the command line; TorchScript needs --trust-code."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_unetseg.__main__ import main
from napari_unetseg.core import Segmenter


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return Segmenter.create(base_width=4, depth=2, device="cpu").save(tmp_path / "m.safetensors")


def test_export_torchscript_then_needs_trust(model: Path, tmp_path: Path, capsys) -> None:
    ts = tmp_path / "m.ts"
    assert main(["export", str(model), str(ts)]) == 0
    assert ts.is_file() and "Exported" in capsys.readouterr().out
    # A TorchScript file is refused as a source without --trust-code, described by info.
    assert main(["export", str(ts), str(tmp_path / "again.ts")]) == 1
    assert "--trust-code" in capsys.readouterr().err
    assert main(["info", str(ts)]) == 0
    assert "neither loaded nor run" in capsys.readouterr().out
    assert main(["export", str(ts), str(tmp_path / "again.ts"), "--trust-code"]) == 0
    assert main(["info", str(ts), "--trust-code"]) == 0
    assert "U-Net (torchscript)" in capsys.readouterr().out


def test_export_onnx_with_explicit_format(model: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "model.bin"
    assert main(["export", str(model), str(out), "--format", "onnx"]) == 0
    onnx.checker.check_model(onnx.load(str(out)))


def test_export_bad_suffix_and_bioimageio_details_elsewhere(
    model: Path, tmp_path: Path, capsys
) -> None:
    assert main(["export", str(model), str(tmp_path / "m.h5")]) == 1
    assert ".onnx" in capsys.readouterr().err
    assert main(["export", str(model), str(tmp_path / "m.ts"), "--author", "Me"]) == 1
    assert "bioimage.io" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_export_bioimageio_from_the_command_line(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("bioimageio.spec")
    pytest.importorskip("onnx")
    sample = tmp_path / "sample.npy"
    np.save(sample, np.random.default_rng(0).random((40, 48), dtype=np.float32))
    out = tmp_path / "package.zip"
    argv = ["export", str(model), str(out), "--author", "A. Person", "--sample", str(sample)]
    assert main([*argv, "--cite", "A paper", "10.1234/x", "--license", "MIT"]) == 0
    with zipfile.ZipFile(out) as archive:
        rdf = archive.read("rdf.yaml").decode()
    assert "A. Person" in rdf and "10.1234/x" in rdf and "MIT" in rdf
    assert Segmenter.load(out, device="cpu").config.in_channels == 1
