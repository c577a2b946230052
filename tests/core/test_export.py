"""Export to TorchScript and ONNX: round trips equal the model, writes are atomic."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unetseg.core import Segmenter
from napari_unetseg.core.errors import ConfigError, TrustRequiredError, WeightsFileError
from napari_unetseg.core.export import export_format


def _segmenter(upsampling: str = "bilinear", channels: int = 1, **kwargs) -> Segmenter:
    """A small model whose batch-norm statistics are not the identity, as after training."""
    seg = Segmenter.create(
        in_channels=channels, base_width=4, depth=3, upsampling=upsampling, device="cpu", **kwargs
    )
    generator = torch.Generator().manual_seed(1)
    for module in seg.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return seg


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model.eval()(x)
    return out


@pytest.mark.parametrize("upsampling", ["bilinear", "transposed"])
def test_torchscript_round_trip(tmp_path: Path, upsampling: str) -> None:
    seg = _segmenter(upsampling, channels=2, class_names=("bg", "nuclei", "membrane"), n_classes=3)
    path = seg.export(tmp_path / "model.ts")
    assert path == tmp_path / "model.ts"

    # Another size than the trace's (64 x 64), and a batch of two.
    x = torch.rand(2, 2, 48, 80)
    expected = _logits(seg.model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        plain = torch.jit.load(str(path))
    assert torch.allclose(_logits(plain, x), expected, atol=1e-5)

    with pytest.raises(TrustRequiredError):
        Segmenter.load(path)
    loaded = Segmenter.load(path, device="cpu", trust_code=True)
    assert loaded.config == seg.config.replace(origin="torchscript")
    assert torch.allclose(_logits(loaded.model, x), expected, atol=1e-5)
    image = np.random.default_rng(0).random((2, 40, 56), dtype=np.float32)
    settings = {"precision": "float32", "device": "cpu", "tile_size": 64}
    np.testing.assert_allclose(
        loaded.predict_proba(image, **settings), seg.predict_proba(image, **settings), atol=1e-5
    )


@pytest.mark.parametrize("upsampling", ["bilinear", "transposed"])
def test_onnx_equals_torch_under_onnxruntime(tmp_path: Path, upsampling: str) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    seg = _segmenter(upsampling)
    path = seg.export(tmp_path / "model.onnx")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.shape[0] == "batch" and given.shape[2:] == ["height", "width"]
    for shape in [(1, 1, 64, 64), (3, 1, 40, 96)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        (out,) = session.run(None, {given.name: x.numpy()})
        expected = _logits(seg.model, x).numpy()
        assert out.shape == expected.shape
        assert np.abs(out - expected).max() < 1e-4


def test_onnx_from_a_torchscript_model(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    seg = _segmenter()
    scripted = Segmenter.load(seg.export(tmp_path / "m.ts"), device="cpu", trust_code=True)
    path = scripted.export(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 1, 32, 48)
    (out,) = session.run(None, {"input": x.numpy()})
    assert np.abs(out - _logits(seg.model, x).numpy()).max() < 1e-4


@pytest.mark.parametrize(
    ("name", "format", "expected"),
    [
        ("m.ts", None, "torchscript"),
        ("m.TorchScript", None, "torchscript"),
        ("m.onnx", None, "onnx"),
        ("m.zip", None, "bioimageio"),
        ("m.bin", "onnx", "onnx"),
    ],
)
def test_format_from_suffix(name: str, format: str | None, expected: str) -> None:
    assert export_format(Path(name), format) == expected


@pytest.mark.parametrize(("name", "format"), [("m.pt", None), ("m.ts", "keras")])
def test_unknown_formats_are_refused(tmp_path: Path, name: str, format: str | None) -> None:
    with pytest.raises(ConfigError, match="onnx"):
        _segmenter().export(tmp_path / name, format)
    assert list(tmp_path.iterdir()) == []


def test_export_is_atomic_and_keeps_the_save_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg = _segmenter()
    saved = seg.save(tmp_path / "native.safetensors")
    exported = seg.export(tmp_path / "model.ts")
    # Exports are written like saves: same permissions (the umask's, once saves honour it).
    assert exported.stat().st_mode == saved.stat().st_mode
    before = exported.read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch.jit, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        seg.export(exported)
    assert exported.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ts", "native.safetensors"]
    with pytest.raises(WeightsFileError, match="folder"):
        seg.export(tmp_path, "onnx")


def test_export_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    seg = _segmenter()
    seg.model.train()
    state = {k: v.clone() for k, v in seg.model.state_dict().items()}
    seg.export(tmp_path / "m.ts")
    assert seg.model.training
    assert all(torch.equal(v, state[k]) for k, v in seg.model.state_dict().items())
    assert os.listdir(tmp_path) == ["m.ts"]
