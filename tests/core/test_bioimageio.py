"""bioimage.io packages: our exports pass bioimageio.core's test_model and load back equal;
foreign 2-D U-Net packages load or are refused with a reason; nothing is downloaded or run
without consent.

The foreign packages are written here by hand (rdf.yaml + files in a zip), as a model zoo
package would be, so these tests need PyYAML but not bioimageio.core.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from reference_unets import NewUNet, randomise
from torch import nn

from napari_unetseg.core import Segmenter
from napari_unetseg.core.config import NormalizationConfig
from napari_unetseg.core.errors import ConfigError, TrustRequiredError, WeightsFileError
from napari_unetseg.core.trust import requires_trust

yaml = pytest.importorskip("yaml")


def _segmenter(**kwargs: Any) -> Segmenter:
    seg = Segmenter.create(base_width=4, depth=3, device="cpu", **kwargs)
    generator = torch.Generator().manual_seed(3)
    for module in seg.model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.2 * torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
    return seg


# --------------------------------------------------------------------------- our exports


@pytest.fixture(scope="module", params=["percentile", "zscore-objects"])
def exported(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[Segmenter, Path]:
    pytest.importorskip("bioimageio.spec")
    pytest.importorskip("onnx")
    if request.param == "percentile":
        seg = _segmenter(class_names=("background", "nuclei"))
    else:
        seg = _segmenter(task="objects", normalization=NormalizationConfig(method="zscore"))
    rng = np.random.default_rng(0)
    sample = rng.gamma(2.0, 300.0, size=(150, 170)).astype(np.float32)
    path = seg.export(
        tmp_path_factory.mktemp("bioimageio") / "nuclei.zip",
        authors=[{"name": "Ada Lovelace", "affiliation": "Analytical Engines"}, "Alan Turing"],
        license="MIT",
        cite=[{"text": "Our nuclei paper", "doi": "10.1234/example"}],
        sample=sample,
        tags=["nuclei"],
    )
    return seg, path


@pytest.mark.slow  # about 10 s on two CPU cores: three weight formats, two batch sizes, three sizes
def test_export_passes_bioimageio_test_model(exported: tuple[Segmenter, Path]) -> None:
    core = pytest.importorskip("bioimageio.core")
    _, path = exported
    summary = core.test_model(path)
    failed = [(d.name, d.errors) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    tested = " ".join(d.name for d in summary.details)
    for weights in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"({weights})" in tested


def test_export_describes_the_model(exported: tuple[Segmenter, Path]) -> None:
    seg, path = exported
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        test_input = np.load(io.BytesIO(archive.read("test_input.npy")))
        test_output = np.load(io.BytesIO(archive.read("test_output.npy")))
    assert {"cover.png", "README.md", "unet_architecture.py", "weights.onnx"} <= names
    assert rdf["format_version"].startswith("0.5")
    assert [a["name"] for a in rdf["authors"]] == ["Ada Lovelace", "Alan Turing"]
    assert rdf["license"] == "MIT" and rdf["cite"][0]["doi"] == "10.1234/example"
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    (given,) = rdf["inputs"]
    assert given["axes"][2]["size"] == {"min": 8, "step": 8}
    steps = {p["id"]: p.get("kwargs") for p in given["preprocessing"]}
    if seg.config.normalization.method == "percentile":
        scale = steps["scale_range"]
        assert (scale["min_percentile"], scale["max_percentile"]) == (1.0, 99.8)
    else:
        assert steps["zero_mean_unit_variance"]["axes"] == ["y", "x"]
    (out,) = rdf["outputs"]
    assert next(p["id"] for p in out["postprocessing"]) == "softmax"
    assert out["axes"][1]["channel_names"] == [n.replace(" ", "_") for n in seg.config.names]
    classes = seg.config.n_classes
    assert test_input.shape == (1, 1, 128, 128) and test_output.shape == (1, classes, 128, 128)
    np.testing.assert_allclose(test_output.sum(axis=1), 1.0, atol=1e-5)


def test_own_package_round_trip(exported: tuple[Segmenter, Path]) -> None:
    seg, path = exported
    assert not requires_trust(path)
    back = Segmenter.load(path, device="cpu")
    assert back.config == seg.config
    image = np.random.default_rng(1).random((70, 90), dtype=np.float32)
    np.testing.assert_allclose(
        back.predict_proba(image, precision="float32"),
        seg.predict_proba(image, precision="float32"),
        atol=1e-6,
    )


def test_package_of_a_torchscript_model_needs_consent_and_round_trips(tmp_path: Path) -> None:
    pytest.importorskip("bioimageio.spec")
    pytest.importorskip("onnx")
    seg = Segmenter.create(base_width=4, depth=2, device="cpu")
    scripted = Segmenter.load(seg.export(tmp_path / "m.ts"), device="cpu", trust_code=True)
    path = scripted.export(tmp_path / "m.zip", authors=["Me"])
    with zipfile.ZipFile(path) as archive:
        assert "pytorch_state_dict" not in yaml.safe_load(archive.read("rdf.yaml"))["weights"]
    assert requires_trust(path)
    with pytest.raises(TrustRequiredError):
        Segmenter.load(path)
    back = Segmenter.load(path, device="cpu", trust_code=True)
    assert back.config == scripted.config
    image = np.random.default_rng(4).random((32, 40), dtype=np.float32)
    np.testing.assert_allclose(
        back.predict_proba(image, precision="float32"),
        seg.predict_proba(image, precision="float32"),
        atol=1e-5,
    )


def test_export_needs_authors(tmp_path: Path) -> None:
    pytest.importorskip("bioimageio.spec")
    with pytest.raises(ConfigError, match="authors"):
        _segmenter().export(tmp_path / "m.zip")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- foreign packages


def _axes(channels: int | list[str]) -> list[dict[str, Any]]:
    names = channels if isinstance(channels, list) else [f"c{i}" for i in range(channels)]
    return [
        {"type": "batch"},
        {"type": "channel", "channel_names": names},
        {"type": "space", "id": "y", "size": {"min": 16, "step": 16}},
        {"type": "space", "id": "x", "size": {"min": 16, "step": 16}},
    ]


def _package(
    path: Path,
    weights: dict[str, tuple[dict[str, Any], bytes | None]],
    *,
    preprocessing: list[dict[str, Any]] | None = None,
    postprocessing: list[dict[str, Any]] | None = None,
    classes: int = 2,
    input_axes: list[dict[str, Any]] | None = None,
) -> Path:
    """A model zoo package: rdf.yaml plus the weight files given (None: not in the zip)."""
    rdf = {
        "format_version": "0.5.4",
        "type": "model",
        "name": "foreign unet",
        "inputs": [
            {
                "id": "raw",
                "axes": input_axes or _axes(1),
                "preprocessing": preprocessing
                if preprocessing is not None
                else [
                    {"id": "scale_range", "kwargs": {"axes": ["y", "x"], "max_percentile": 99.0}}
                ],
            }
        ],
        "outputs": [
            {
                "id": "prob",
                "axes": _axes(classes)[:2]
                + [
                    {"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a}}
                    for a in "yx"
                ],
                "postprocessing": postprocessing
                if postprocessing is not None
                else [{"id": "softmax", "kwargs": {"axis": "channel"}}],
            }
        ],
        "weights": {name: entry for name, (entry, _) in weights.items()},
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(rdf))
        for entry, data in weights.values():
            if data is not None:
                archive.writestr(entry["source"], data)
    return path


def _state_dict_bytes(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def _torchscript_bytes(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def _pytorch_unet() -> nn.Module:
    torch.manual_seed(0)
    return randomise(NewUNet(1, 2, bilinear=True, w=4), 0).eval()


STATE_DICT = {
    "source": "weights.pt",
    "architecture": {"source": "unet.py", "callable": "UNet", "kwargs": {"n_channels": 1}},
    "pytorch_version": "2.0",
}


SCALE_RANGE = [{"id": "scale_range", "kwargs": {"axes": ["y", "x"], "max_percentile": 99.0}}]
ZERO_MEAN = [
    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
    # eps as PyYAML reads the "1e-06" that bioimageio.spec writes: a string
    {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"], "eps": "1e-06"}},
]


def _expected(
    reference: nn.Module, image: np.ndarray, preprocessing: list[dict[str, Any]] = SCALE_RANGE
) -> np.ndarray:
    """What bioimage.io's own tools would compute: the package's steps, then its softmax."""
    if preprocessing is SCALE_RANGE:
        low, top = np.percentile(image, [0.0, 99.0])
        normalised = (image - low) / (top - low + 1e-6)
    else:
        normalised = (image - image.mean()) / (image.std() + 1e-6)
    x = torch.from_numpy(normalised.astype(np.float32))[None, None]
    with torch.no_grad():
        return torch.softmax(reference(x), dim=1)[0].numpy()


@pytest.mark.parametrize(
    ("preprocessing", "method"), [(SCALE_RANGE, "percentile"), (ZERO_MEAN, "zscore")]
)
def test_foreign_state_dict_package_loads(
    tmp_path: Path, preprocessing: list[dict[str, Any]], method: str
) -> None:
    reference = _pytorch_unet()
    weights = {"pytorch_state_dict": (STATE_DICT, _state_dict_bytes(reference))}
    path = _package(tmp_path / "zoo.zip", weights, preprocessing=preprocessing)
    assert not requires_trust(path)
    seg = Segmenter.load(path, device="cpu")
    assert seg.config.normalization.method == method
    if method == "percentile":
        assert seg.config.normalization == NormalizationConfig("percentile", 0.0, 99.0)
    assert seg.config.origin == "bioimageio"
    image = np.random.default_rng(2).random((64, 64), dtype=np.float32) * 1000
    np.testing.assert_allclose(
        seg.predict_proba(image, precision="float32"),
        _expected(reference, image, preprocessing),
        atol=1e-4,
    )


def test_foreign_torchscript_package_needs_consent(tmp_path: Path) -> None:
    reference = _pytorch_unet()
    entry = {"source": "model.pt", "pytorch_version": "2.0"}
    path = _package(tmp_path / "ts.zip", {"torchscript": (entry, _torchscript_bytes(reference))})
    assert requires_trust(path)
    with pytest.raises(TrustRequiredError, match="TorchScript"):
        Segmenter.load(path)
    seg = Segmenter.load(path, device="cpu", trust_code=True)
    image = np.random.default_rng(3).random((64, 64), dtype=np.float32)
    np.testing.assert_allclose(
        seg.predict_proba(image, precision="float32"), _expected(reference, image), atol=1e-4
    )


def test_hostile_torchscript_package_runs_nothing_without_consent(tmp_path: Path) -> None:
    from test_trust import ORIGINAL, WritesInForward

    victim = tmp_path / "victim.bin"
    victim.write_bytes(ORIGINAL)
    entry = {"source": "model.pt", "pytorch_version": "2.0"}
    hostile = _torchscript_bytes(WritesInForward(str(victim)))
    path = _package(tmp_path / "evil.zip", {"torchscript": (entry, hostile)})
    with pytest.raises(TrustRequiredError):
        Segmenter.load(path)
    assert victim.read_bytes() == ORIGINAL


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"weights_url": True}, "never downloads"),
        (
            {"preprocessing": [{"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": 1}}]},
            "fixed_zero_mean_unit_variance",
        ),
        (
            {"preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x"]}}]},
            "over axes",
        ),
        (
            {
                "input_axes": _axes(2),
                "preprocessing": [{"id": "scale_range", "kwargs": {"axes": ["c", "y", "x"]}}],
            },
            "pools the channels",
        ),
        ({"postprocessing": [{"id": "binarize", "kwargs": {"threshold": 0.5}}]}, "binarize"),
        (
            {"input_axes": _axes(1)[:2] + [{"type": "space", "id": a, "size": 16} for a in "zyx"]},
            "2-D",
        ),
        ({"onnx_only": True}, "onnx: napari-unetseg runs PyTorch weights only"),
        ({"classes": 1, "postprocessing": []}, "logits or probabilities"),
    ],
    ids=[
        "url",
        "fixed-zero-mean",
        "zero-mean-one-axis",
        "pooled-channels",
        "binarize",
        "3d",
        "onnx-only",
        "one-channel-no-sigmoid",
    ],
)
def test_foreign_packages_refused_with_a_reason(
    tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    weights: dict[str, tuple[dict[str, Any], bytes | None]] = {
        "pytorch_state_dict": (STATE_DICT, _state_dict_bytes(_pytorch_unet()))
    }
    if change.pop("weights_url", False):
        weights = {
            "pytorch_state_dict": ({**STATE_DICT, "source": "https://example.org/w.pt"}, None)
        }
    if change.pop("onnx_only", False):
        weights = {"onnx": ({"source": "w.onnx", "opset_version": 17}, b"not run")}
    path = _package(tmp_path / "zoo.zip", weights, **change)
    with pytest.raises(WeightsFileError, match=reason):
        Segmenter.load(path)


def test_state_dict_of_another_architecture_is_refused(tmp_path: Path) -> None:
    other = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    path = _package(
        tmp_path / "zoo.zip", {"pytorch_state_dict": (STATE_DICT, _state_dict_bytes(other))}
    )
    with pytest.raises(WeightsFileError, match="not a U-Net in the Pytorch-UNet layout"):
        Segmenter.load(path)


def test_zscore_normalisation_is_per_channel() -> None:
    from napari_unetseg.core.layout import resolve_layout
    from napari_unetseg.core.normalization import fit_normalizer

    rng = np.random.default_rng(5)
    image = np.stack([rng.normal(5, 2, (64, 64)), rng.normal(100, 30, (64, 64))])
    image = image.astype(np.float32)
    layout = resolve_layout(image, 2, "CYX")
    out = fit_normalizer(image, layout, NormalizationConfig("zscore"))(image)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-4)


def test_the_packaged_architecture_file_builds_our_network_with_torch_alone() -> None:
    """What a bioimage.io runner builds from ``unet_architecture.py`` gives our outputs."""
    from napari_unetseg.core import Segmenter
    from napari_unetseg.core.bioimageio import (
        ARCHITECTURE_CALLABLE,
        architecture_kwargs,
        architecture_source,
    )

    seg = Segmenter.create(base_width=4, depth=2, device="cpu", seed=0)
    namespace: dict = {"__name__": "unet_architecture"}
    exec(compile(architecture_source(), "unet_architecture.py", "exec"), namespace)
    packaged = namespace[ARCHITECTURE_CALLABLE](**architecture_kwargs(seg.config))
    packaged.load_state_dict(seg.model.state_dict())
    packaged.eval()
    seg.model.eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(packaged(x), seg.model(x), atol=1e-6)
