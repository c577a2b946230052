"""Weights I/O: classic Pytorch-UNet files, native round trips, TorchScript, safety, damage, atomicity.

The classic references are our own re-implementations of the original modules
(``reference_unets.py``); outputs of the loaded model must equal theirs.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import pickle
import pickletools
import re
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from reference_unets import NewUNet, SeedUNet, randomise
from safetensors.torch import save_file
from torch import nn

import napari_unetseg
from napari_unetseg.core import atomic_files
from napari_unetseg.core import weights as weights_module
from napari_unetseg.core.config import NormalizationConfig
from napari_unetseg.core.errors import UnsafeWeightsError, WeightsFileError
from napari_unetseg.core.segmenter import Segmenter
from napari_unetseg.core.weights import FORMAT_HELP, infer_config, load_weights, save_weights

SRC = Path(napari_unetseg.__file__).resolve().parent

# layout name -> (reference constructor, expected upsampling, expected conv bias)
LAYOUTS: dict[str, tuple[Callable[..., nn.Module], str, bool]] = {
    "seed-bilinear": (lambda c, k, w: SeedUNet(c, k, bilinear=True, w=w), "bilinear", True),
    "new-bilinear": (lambda c, k, w: NewUNet(c, k, bilinear=True, w=w), "bilinear", False),
    "new-transposed": (lambda c, k, w: NewUNet(c, k, bilinear=False, w=w), "transposed", False),
}
#: Width of the quick references; the original 64 (~17M parameters) is checked once per layout.
SMALL = 4


@functools.lru_cache(maxsize=16)
def reference(layout: str, channels: int, classes: int, width: int = SMALL) -> nn.Module:
    """A classic U-Net in eval mode with random weights and batch-norm statistics."""
    seed = sorted(LAYOUTS).index(layout) * 100 + channels * 10 + classes
    torch.manual_seed(seed)
    return randomise(LAYOUTS[layout][0](channels, classes, width), seed)


@pytest.fixture(autouse=True, scope="module")
def _release_references() -> Any:
    yield
    reference.cache_clear()


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(x)
    return out


def assert_same_outputs(
    ours: nn.Module, theirs: nn.Module, channels: int, size: tuple[int, int] = (24, 40)
) -> None:
    # Neither side is a multiple of 16: the decoder's pad path is taken at every level.
    x = torch.rand((1, channels, *size), generator=torch.Generator().manual_seed(7))
    expected, got = forward(theirs, x), forward(ours, x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (got - expected).abs().max()


def check_classic_config(seg_config: Any, layout: str, channels: int, classes: int) -> None:
    _, upsampling, bias = LAYOUTS[layout]
    assert seg_config.in_channels == channels
    assert seg_config.n_classes == classes
    assert seg_config.upsampling == upsampling
    assert seg_config.conv_bias is bias
    assert seg_config.origin == "pytorch-unet"
    assert seg_config.normalization.method == "classic"
    assert seg_config.depth == 4


def expected_message(error: pytest.ExceptionInfo[BaseException], path: Path) -> None:
    message = str(error.value)
    assert path.name in message, message
    assert FORMAT_HELP in message or "again" in message, message


# --------------------------------------------------------------------------- classic layouts


@pytest.mark.parametrize("classes", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_classic_state_dict_loads_and_matches_reference(
    tmp_path: Path, layout: str, channels: int, classes: int
) -> None:
    theirs = reference(layout, channels, classes)
    path = tmp_path / "unet.pth"
    torch.save(theirs.state_dict(), path)

    seg = Segmenter.load(path, device="cpu")

    check_classic_config(seg.config, layout, channels, classes)
    assert not seg.model.training
    assert_same_outputs(seg.model, theirs, channels, size=(50, 70))


@pytest.mark.parametrize(
    ("layout", "channels", "classes"),
    [("seed-bilinear", 3, 1), ("new-bilinear", 1, 2), ("new-transposed", 3, 2)],
)
def test_full_size_classic_unet(tmp_path: Path, layout: str, channels: int, classes: int) -> None:
    theirs = reference(layout, channels, classes, width=64)
    assert sum(p.numel() for p in theirs.parameters()) > 13_000_000
    path = tmp_path / "unet_epoch40.pth"
    torch.save(theirs.state_dict(), path)

    seg = Segmenter.load(path, device="cpu")

    check_classic_config(seg.config, layout, channels, classes)
    assert seg.config.encoder_channels[0] == 64
    assert seg.config.encoder_channels[-1] == (
        512 if layout == "new-bilinear" or layout.startswith("seed") else 1024
    )
    assert_same_outputs(seg.model, theirs, channels, size=(24, 40))
    reference.cache_clear()  # 70 MB each: do not keep them


def _milesial(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    # Pytorch-UNet's train.py: the state dict plus the mask values found in the training masks.
    return {**state, "mask_values": [[0, 0, 0], [255, 255, 255]]}


def _wrapped(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    # A DataParallel model inside a training checkpoint.
    return {
        "epoch": 12,
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]},
    }


def _lightning(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {"state_dict": {f"model.{k}": v for k, v in state.items()}, "global_step": 3}


WRAPPERS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, Any]]] = {
    "milesial": _milesial,
    "checkpoint-module": _wrapped,
    "lightning-prefix": _lightning,
}


@pytest.mark.parametrize(
    ("layout", "channels", "classes", "wrapper"),
    [
        ("seed-bilinear", 3, 1, "milesial"),
        ("new-bilinear", 1, 2, "milesial"),
        ("new-transposed", 3, 2, "checkpoint-module"),
        ("seed-bilinear", 1, 2, "checkpoint-module"),
        ("new-bilinear", 3, 1, "lightning-prefix"),
    ],
)
def test_classic_checkpoints_unwrap(
    tmp_path: Path, layout: str, channels: int, classes: int, wrapper: str
) -> None:
    theirs = reference(layout, channels, classes)
    path = tmp_path / "checkpoint_epoch12.pth"
    torch.save(WRAPPERS[wrapper](theirs.state_dict()), path)

    loaded = load_weights(path)

    assert loaded.format == "state_dict"
    check_classic_config(loaded.config, layout, channels, classes)
    assert_same_outputs(loaded.model, theirs, channels)


@pytest.mark.parametrize(
    ("layout", "channels", "classes"),
    [("seed-bilinear", 1, 1), ("new-bilinear", 3, 2), ("new-transposed", 1, 2)],
)
def test_classic_state_dict_as_plain_safetensors(
    tmp_path: Path, layout: str, channels: int, classes: int
) -> None:
    theirs = reference(layout, channels, classes)
    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(path))

    loaded = load_weights(path)

    assert loaded.format == "safetensors"
    check_classic_config(loaded.config, layout, channels, classes)
    assert_same_outputs(loaded.model, theirs, channels)


def test_missing_batch_norm_counters_are_tolerated(tmp_path: Path) -> None:
    theirs = reference("new-bilinear", 3, 2)
    state = {k: v for k, v in theirs.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "converted.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    assert_same_outputs(load_weights(path).model, theirs, 3)


# --------------------------------------------------------------------------- classic preprocessing


@pytest.mark.parametrize(
    ("layout", "channels", "classes"),
    [("seed-bilinear", 1, 1), ("new-bilinear", 1, 2), ("new-transposed", 3, 2)],
)
def test_classic_preprocessing_end_to_end(
    tmp_path: Path, layout: str, channels: int, classes: int
) -> None:
    theirs = reference(layout, channels, classes)
    path = tmp_path / "unet.pth"
    torch.save(theirs.state_dict(), path)
    seg = Segmenter.load(path, device="cpu")
    rng = np.random.default_rng(3)
    shape = (64, 64) if channels == 1 else (64, 64, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    image[0, 0] = 255  # "any value above 1" holds

    probabilities = seg.predict_proba(image, tile_size=128, precision="float32", device="cpu")
    labels = seg.segment(image, tile_size=128, precision="float32", device="cpu")

    x = torch.from_numpy(image.astype(np.float32) / 255.0)
    x = x[None, None] if channels == 1 else x.permute(2, 0, 1)[None]
    logits = forward(theirs, x)
    expected = torch.sigmoid(logits) if classes == 1 else torch.softmax(logits, dim=1)
    assert probabilities.shape == (classes, 64, 64)
    np.testing.assert_allclose(probabilities, expected[0].numpy(), atol=1e-5)
    if classes == 1:
        np.testing.assert_array_equal(labels, probabilities[0] > 0.5)
    else:
        np.testing.assert_array_equal(labels, probabilities.argmax(axis=0))


# --------------------------------------------------------------------------- native files


def _state_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _native(kind: str) -> Segmenter:
    options: dict[str, Any] = {
        "semantic": {"in_channels": 1, "n_classes": 2, "class_names": ("background", "nucleus")},
        "one-output": {"in_channels": 1, "n_classes": 1},
        "transposed-rgb": {
            "in_channels": 3,
            "n_classes": 3,
            "upsampling": "transposed",
            "class_names": ("background", "cell", "debris"),
            "normalization": NormalizationConfig(method="percentile", low=2.0, high=99.0),
        },
        "objects": {"in_channels": 2, "task": "objects"},
    }[kind]
    seg = Segmenter.create(base_width=8, depth=3, device="cpu", seed=5, **options)
    # Random weights everywhere, batch-norm statistics included, so equality means something.
    randomise(seg.model, seed=11)
    summary = {"steps": 40, "epochs": 2, "seconds": 12.5, "best_validation_dice": 0.93, "runs": 1}
    seg.config = seg.config.replace(training=summary)
    return seg


@pytest.mark.parametrize("kind", ["semantic", "one-output", "transposed-rgb", "objects"])
def test_native_safetensors_round_trip(tmp_path: Path, kind: str) -> None:
    seg = _native(kind)
    path = seg.save(tmp_path / "model.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]

    back = Segmenter.load(path, device="cpu")

    assert back.config.to_dict() == seg.config.to_dict()
    assert back.is_objects == (kind == "objects")
    assert back.config.names == seg.config.names
    assert back.config.training["best_validation_dice"] == 0.93
    assert load_weights(path).format == "native"
    _state_equal(back.model, seg.model)
    x = torch.rand(1, seg.config.in_channels, 40, 56)
    assert torch.equal(forward(back.model, x), forward(seg.model, x))


def test_numpy_values_in_training_summary_are_saved(tmp_path: Path) -> None:
    seg = _native("semantic")
    seg.config = seg.config.replace(
        training={"best_validation_dice": np.float32(0.5), "steps": np.int64(3)}
    )
    back = Segmenter.load(seg.save(tmp_path / "model.safetensors"), device="cpu")
    assert back.config.training == {"best_validation_dice": 0.5, "steps": 3}


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_native_state_dict_with_and_without_sidecar(tmp_path: Path, suffix: str) -> None:
    seg = _native("transposed-rgb")
    path = seg.save(tmp_path / f"model{suffix}")
    sidecar = tmp_path / "model.json"
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, sidecar.name])

    with_sidecar = load_weights(path)
    assert with_sidecar.format == "state_dict"
    assert with_sidecar.config.to_dict() == seg.config.to_dict()
    _state_equal(with_sidecar.model, seg.model)

    sidecar.unlink()
    inferred = load_weights(path)
    c = inferred.config
    assert (c.in_channels, c.n_classes, c.upsampling) == (3, 3, "transposed")
    assert c.encoder_channels == seg.config.encoder_channels
    assert c.decoder_channels == seg.config.decoder_channels
    assert c.conv_bias is False
    x = torch.rand(1, 3, 48, 40)
    assert torch.equal(forward(inferred.model, x), forward(seg.model, x))


def test_foreign_json_beside_weights_is_ignored(tmp_path: Path) -> None:
    theirs = reference("seed-bilinear", 1, 1)
    torch.save(theirs.state_dict(), tmp_path / "unet.pth")
    (tmp_path / "unet.json").write_text(json.dumps({"lr": 1e-5, "epochs": 5}))
    assert load_weights(tmp_path / "unet.pth").config.origin == "pytorch-unet"


def test_stale_sidecar_is_named(tmp_path: Path) -> None:
    _native("semantic").save(tmp_path / "model.pth")
    # Someone overwrites the weights with another network but leaves our JSON in place.
    torch.save(_native("transposed-rgb").model.state_dict(), tmp_path / "model.pth")
    with pytest.raises(WeightsFileError, match=r"model\.json") as error:
        load_weights(tmp_path / "model.pth")
    assert type(error.value) is WeightsFileError
    (tmp_path / "model.json").unlink()
    assert load_weights(tmp_path / "model.pth").config.in_channels == 3


# --------------------------------------------------------------------------- TorchScript


def _scripted_reference() -> tuple[nn.Module, nn.Module, int, int]:
    theirs = reference("new-transposed", 1, 2)
    return torch.jit.script(theirs), theirs, 1, 2


@functools.lru_cache(maxsize=1)
def _traced_native() -> tuple[nn.Module, nn.Module, int, int]:
    seg = _native("transposed-rgb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the shape check
        traced = torch.jit.trace(seg.model, torch.rand(1, 3, 64, 64), check_trace=False)
    return traced, seg.model, 3, 3


@pytest.mark.parametrize("make", [_scripted_reference, _traced_native], ids=["script", "trace"])
def test_torchscript_archive_loads(
    tmp_path: Path, make: Callable[[], tuple[nn.Module, nn.Module, int, int]]
) -> None:
    archive, original, channels, classes = make()
    path = tmp_path / "exported.pt"
    torch.jit.save(archive, str(path))

    seg = Segmenter.load(path, device="cpu", trust_code=True)

    assert load_weights(path, trust_code=True).format == "torchscript"
    assert (seg.config.in_channels, seg.config.n_classes) == (channels, classes)
    assert seg.config.origin == "torchscript"
    x = torch.rand(1, channels, 64, 64)
    assert torch.allclose(forward(seg.model, x), forward(original, x), atol=1e-5)
    shape = (64, 64) if channels == 1 else (channels, 64, 64)
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    probabilities = seg.predict_proba(image, tile_size=128, precision="float32", device="cpu")
    assert probabilities.shape == (classes, 64, 64)


def test_torchscript_saved_by_us_keeps_its_settings(tmp_path: Path) -> None:
    traced, _, _, _ = _traced_native()
    config = _native("transposed-rgb").config
    save_weights(tmp_path / "exported.pt", traced, config)
    loaded = load_weights(tmp_path / "exported.pt", trust_code=True)
    assert loaded.config.class_names == config.class_names
    assert loaded.config.normalization == config.normalization
    with pytest.raises(WeightsFileError, match=r"\.pt or \.pth"):
        save_weights(tmp_path / "exported.safetensors", traced, config)


# --------------------------------------------------------------------------- safety


class WritesFile:
    """Unpickling this writes ``marker``: what a malicious weights file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


def _zip_dict(payload: object, path: Path) -> None:
    torch.save({"inc.double_conv.0.weight": torch.zeros(4, 1, 3, 3), "extra": payload}, path)


def _raw_pickle(payload: object, path: Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"weights": payload}, handle)


def _raw_pickle_protocol0(payload: object, path: Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=0)


def _legacy_torch(payload: object, path: Path) -> None:
    torch.save({"extra": payload}, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize("payload", [WritesFile, RunsShell], ids=["write_text", "os.system"])
@pytest.mark.parametrize(
    "write",
    [_zip_dict, _raw_pickle, _raw_pickle_protocol0, _legacy_torch],
    ids=["torch-zip", "raw-pickle", "raw-pickle-protocol0", "torch-legacy"],
)
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_code_running_pickles_are_refused_unrun(
    tmp_path: Path,
    payload: type,
    write: Callable[[object, Path], None],
    suffix: str,
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"weights{suffix}"
    write(payload(marker), path)
    assert not marker.exists()

    with pytest.raises(UnsafeWeightsError, match="refused") as error:
        Segmenter.load(path, device="cpu")

    assert not marker.exists()
    assert path.name in str(error.value)
    assert re.search(r"pathlib|write_text|system", str(error.value))


def test_malicious_payload_is_live(tmp_path: Path) -> None:
    """Control: the payload above really runs when unpickled the unsafe way."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(WritesFile(marker)))
    assert marker.read_text() == "pwned"


def test_pickled_whole_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "full_model.pth"
    torch.save(nn.Sequential(nn.Conv2d(1, 2, 3)), path)
    with pytest.raises(UnsafeWeightsError, match=r"torch\.nn|state_dict"):
        load_weights(path)


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found.append((ast.unparse(node.func), node))
    return found


def test_source_never_unpickles_unsafely() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert files
    torch_loads = 0
    for file in files:
        text = file.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for name, call in _calls(tree):
            where = f"{file.relative_to(SRC)}:{call.lineno}"
            if name.endswith(("torch.load", "serialization.load")):
                torch_loads += 1
                keywords = {k.arg: k.value for k in call.keywords}
                flag = keywords.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, where
            assert not name.startswith(("pickle.", "cPickle.", "dill.", "joblib.load")), where
            assert name not in ("load", "loads", "Unpickler"), where
            if name in ("np.load", "numpy.load"):
                keywords = {k.arg: k.value for k in call.keywords}
                flag = keywords.get("allow_pickle")
                assert flag is None or (isinstance(flag, ast.Constant) and flag.value is False), (
                    where
                )
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "torch"):
                imported = {alias.name for alias in node.names}
                assert not imported & {"load", "loads", "Unpickler"}, file
        # Catch the textual form too (e.g. a call through functools.partial).
        assert "pickle.load" not in text and "pickle.Unpickler" not in text, file
    assert torch_loads >= 1


# --------------------------------------------------------------------------- damaged files


def _native_bytes(tmp_path: Path) -> bytes:
    path = _native("semantic").save(tmp_path / "source.safetensors")
    data = path.read_bytes()
    path.unlink()
    return data


def _torch_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "source.pth"
    torch.save(_native("semantic").model.state_dict(), path)
    data = path.read_bytes()
    path.unlink()
    return data


def _make_empty(tmp: Path) -> Path:
    (tmp / "empty.pth").write_bytes(b"")
    return tmp / "empty.pth"


def _make_half_native(tmp: Path) -> Path:
    data = _native_bytes(tmp)
    (tmp / "half.safetensors").write_bytes(data[: len(data) // 2])
    return tmp / "half.safetensors"


def _make_header_cut_native(tmp: Path) -> Path:
    (tmp / "cut.safetensors").write_bytes(_native_bytes(tmp)[:40])
    return tmp / "cut.safetensors"


def _make_half_pth(tmp: Path) -> Path:
    data = _torch_bytes(tmp)
    (tmp / "half.pth").write_bytes(data[: len(data) // 2])
    return tmp / "half.pth"


def _make_zip_head_only(tmp: Path) -> Path:
    (tmp / "head.pth").write_bytes(_torch_bytes(tmp)[:100])
    return tmp / "head.pth"


def _make_legacy_cut(tmp: Path) -> Path:
    path = tmp / "legacy.pth"
    torch.save(_native("semantic").model.state_dict(), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:3000])
    return path


def _make_png(tmp: Path) -> Path:
    header = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x00\x00\x00\x00"
    )
    (tmp / "cells.pth").write_bytes(header + bytes(200))
    return tmp / "cells.pth"


def _make_text(tmp: Path) -> Path:
    (tmp / "notes.pth").write_text("these are not weights\n" * 20)
    return tmp / "notes.pth"


def _make_json_pth(tmp: Path) -> Path:
    (tmp / "config.pth").write_text(json.dumps({"in_channels": 1, "n_classes": 2}))
    return tmp / "config.pth"


def _make_json(tmp: Path) -> Path:
    (tmp / "settings.json").write_text(json.dumps({"in_channels": 1}))
    return tmp / "settings.json"


def _make_folder(tmp: Path) -> Path:
    (tmp / "weights.pth").mkdir()
    return tmp / "weights.pth"


def _make_missing(tmp: Path) -> Path:
    return tmp / "not-there.safetensors"


def _make_foreign_safetensors(tmp: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    tensors = {f"layer{i}.kernel": torch.randn(8, 8, generator=generator) for i in range(3)}
    save_file(tensors, str(tmp / "resnet.safetensors"))
    return tmp / "resnet.safetensors"


def _make_foreign_pth(tmp: Path) -> Path:
    torch.save(nn.Linear(4, 2).state_dict(), tmp / "linear.pth")
    return tmp / "linear.pth"


def _make_plain_zip(tmp: Path) -> Path:
    with zipfile.ZipFile(tmp / "bundle.pth", "w") as archive:
        archive.writestr("readme.txt", "hello")
    return tmp / "bundle.pth"


def _make_truncated_pickle(tmp: Path) -> Path:
    (tmp / "cut.pt").write_bytes(pickle.dumps({"a": list(range(100))})[:60])
    return tmp / "cut.pt"


def _make_plain_pickle(tmp: Path) -> Path:
    (tmp / "list.pt").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    return tmp / "list.pt"


def _make_no_tensors(tmp: Path) -> Path:
    torch.save({"epoch": 3, "mask_values": [0, 1]}, tmp / "meta.pth")
    return tmp / "meta.pth"


def _make_wrong_rank(tmp: Path) -> Path:
    torch.save({"inc.double_conv.0.weight": torch.zeros(3)}, tmp / "flat.pth")
    return tmp / "flat.pth"


def _make_wrong_shape(tmp: Path) -> Path:
    state = dict(_native("semantic").model.state_dict())
    state["up1.conv.double_conv.3.weight"] = torch.zeros(5, 5, 3, 3)
    torch.save(state, tmp / "mangled.pth")
    return tmp / "mangled.pth"


def _make_incomplete(tmp: Path) -> Path:
    state = {k: v for k, v in _native("semantic").model.state_dict().items() if "outc" not in k}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "no_head.safetensors"))
    return tmp / "no_head.safetensors"


def _make_bad_metadata(tmp: Path) -> Path:
    state = {k: v.contiguous() for k, v in _native("semantic").model.state_dict().items()}
    metadata = {weights_module.METADATA_KEY: json.dumps({"in_channels": -1, "colour": "blue"})}
    save_file(state, str(tmp / "odd.safetensors"), metadata=metadata)
    return tmp / "odd.safetensors"


DAMAGED = [
    _make_empty,
    _make_half_native,
    _make_header_cut_native,
    _make_half_pth,
    _make_zip_head_only,
    _make_legacy_cut,
    _make_png,
    _make_text,
    _make_json_pth,
    _make_json,
    _make_folder,
    _make_missing,
    _make_foreign_safetensors,
    _make_foreign_pth,
    _make_plain_zip,
    _make_truncated_pickle,
    _make_plain_pickle,
    _make_no_tensors,
    _make_wrong_rank,
    _make_wrong_shape,
    _make_incomplete,
    _make_bad_metadata,
]


@pytest.mark.parametrize("make", DAMAGED, ids=[m.__name__.removeprefix("_make_") for m in DAMAGED])
def test_damaged_or_foreign_files_give_a_clear_error(
    tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    path = make(tmp_path)
    with pytest.raises(WeightsFileError) as error:
        Segmenter.load(path, device="cpu")
    # Damage is not a security refusal, and never a bare KeyError/RuntimeError/zipfile error.
    assert type(error.value) is WeightsFileError
    expected_message(error, path)


def test_infer_config_rejects_foreign_state_dict() -> None:
    with pytest.raises(WeightsFileError, match="Pytorch-UNet layout"):
        infer_config({"encoder.weight": torch.zeros(2, 2)})


# --------------------------------------------------------------------------- atomic saves


def test_saving_over_an_existing_file_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    _native("semantic").save(path)
    replacement = _native("objects")
    replacement.save(path)
    assert load_weights(path).config.to_dict() == replacement.config.to_dict()
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def _fail_midway(error: BaseException) -> Callable[..., None]:
    def write(*args: Any, **kwargs: Any) -> None:
        target = next(a for a in (*args, *kwargs.values()) if isinstance(a, (str, Path)))
        Path(target).write_bytes(b"half a file")
        raise error

    return write


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_failed_save_leaves_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, error: BaseException
) -> None:
    path = tmp_path / f"model{suffix}"
    _native("semantic").save(path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    if suffix == ".safetensors":
        monkeypatch.setattr(weights_module, "save_file", _fail_midway(error))
    else:
        monkeypatch.setattr(torch, "save", _fail_midway(error))

    with pytest.raises(type(error)):
        _native("objects").save(path)

    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before  # same files, same bytes, no temporary left behind


def test_failed_sidecar_write_keeps_weights_and_settings_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pt"
    _native("semantic").save(path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    monkeypatch.setattr(Path, "write_text", _fail_midway(OSError(13, "Permission denied")))

    with pytest.raises(OSError, match="Permission denied"):
        _native("transposed-rgb").save(path)

    monkeypatch.undo()
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before
    assert load_weights(path).config.in_channels == 1


@pytest.mark.parametrize("name", ["model.h5", "model.onnx", "model", "model.safetensor"])
def test_unsupported_suffix_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(WeightsFileError, match=r"\.safetensors"):
        _native("semantic").save(tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_saving_onto_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(WeightsFileError, match="folder"):
        _native("semantic").save(tmp_path / "model.safetensors")


# --------------------------------------------------------------------------- save safety (issue 14)


def test_a_save_never_replaces_a_json_file_it_did_not_write(tmp_path: Path) -> None:
    notes = tmp_path / "experiment.json"
    notes.write_text('{"sample": "liver 3", "stain": "DAPI"}\n')
    with pytest.raises(WeightsFileError, match=r"experiment\.json.*experiment\.safetensors"):
        _native("semantic").save(tmp_path / "experiment.pt")
    assert notes.read_text() == '{"sample": "liver 3", "stain": "DAPI"}\n'
    assert sorted(os.listdir(tmp_path)) == ["experiment.json"]
    # Our own settings file is replaced as before.
    _native("semantic").save(tmp_path / "model.pt")
    _native("transposed-rgb").save(tmp_path / "model.pt")
    assert json.loads((tmp_path / "model.json").read_text())["in_channels"] == 3


def test_weights_keep_their_settings_when_the_json_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pt"
    _native("semantic").save(path)
    real_replace = os.replace

    def replace(source: Any, target: Any) -> None:
        if str(target).endswith(".json"):
            raise OSError(5, "Input/output error")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    new = _native("transposed-rgb")
    with pytest.raises(OSError, match="Input/output"):
        new.save(path)
    monkeypatch.undo()
    # The new weights went in, the old JSON stayed: the weights' own settings win.
    assert json.loads((tmp_path / "model.json").read_text())["in_channels"] == 1
    assert load_weights(path).config.to_dict() == new.config.to_dict()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_pt_files_describe_themselves_and_stay_plain_state_dicts(tmp_path: Path) -> None:
    seg = _native("objects")
    path = seg.save(tmp_path / "model.pth")
    (tmp_path / "model.json").unlink()
    assert load_weights(path).config.to_dict() == seg.config.to_dict()
    # Any PyTorch code still loads it as a plain state dict.
    fresh = Segmenter.create(in_channels=2, task="objects", base_width=8, depth=3, device="cpu")
    fresh.model.load_state_dict(torch.load(path, weights_only=True))
    _state_equal(fresh.model, seg.model)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saves_keep_the_umask_permissions(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        _native("semantic").save(tmp_path / "model.pt")
        _native("semantic").save(tmp_path / "model.safetensors")
        atomic_files.atomic_write(tmp_path / "labels.npy", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(previous)
    for name in ("model.pt", "model.json", "model.safetensors", "labels.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saving_over_a_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    _native("semantic").save(path)
    path.chmod(0o664)
    _native("semantic").save(path)
    assert path.stat().st_mode & 0o777 == 0o664


KILLED_SAVE = """
import os, signal, sys
import torch
from napari_unetseg.core import Segmenter

def die_midway(obj, target, *args, **kwargs):
    with open(target, "wb") as handle:
        handle.write(b"half a file" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = die_midway
Segmenter.create(base_width=4, depth=2, device="cpu").save(sys.argv[1])
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_temporaries_of_killed_saves_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "model.pt"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(path)], capture_output=True, check=False
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".model.pt."), left
    # Not touched: a save of this process in progress, another file's temporary, a fresh
    # temporary from before this version (its owner cannot be checked).
    in_progress = tmp_path / f".model.pt.{atomic_files._host()}-{os.getpid()}.0123abcd.tmp"
    other = tmp_path / ".notes.txt.host-1.0123abcd.tmp"
    recent_old_style = tmp_path / ".model.pt.k2j_9x7q.tmp"
    ancient_old_style = tmp_path / ".model.pt.a8d_3kzq.tmp"
    for extra in (in_progress, other, recent_old_style, ancient_old_style):
        extra.write_bytes(b"x")
    stale = time.time() - atomic_files.STALE_SECONDS - 60
    os.utime(ancient_old_style, (stale, stale))

    _native("semantic").save(path)

    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".tmp")) == sorted(
        [in_progress.name, other.name, recent_old_style.name]
    )
    assert load_weights(path).config.in_channels == 1


def _op_string(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def _decoy_pickle(decoys: bytes) -> bytes:
    """os.system("true") via STACK_GLOBAL, with ``decoys`` pushed and popped just before it."""
    return (
        b"\x80\x04"  # PROTO 4
        + _op_string("os")
        + _op_string("system")
        + decoys
        + b"\x93"  # STACK_GLOBAL
        + _op_string("true")
        + b"\x85"  # TUPLE1
        + b"R"  # REDUCE
        + b"."  # STOP
    )


DECOYS = {
    "pop": _op_string("torch") + _op_string("Tensor") + b"00",  # POP POP
    "pop-mark": b"(" + _op_string("torch") + _op_string("Tensor") + b"1",  # MARK .. POP_MARK
    "memo": _op_string("torch._utils") + b"\x94" + _op_string("_rebuild_tensor") + b"\x94"
    + b"0" + b"0" + b"h\x00" + b"h\x01" + b"00",  # MEMOIZE, POP, BINGET twice, POP
}  # fmt: skip


def _in_torch_zip(data: bytes, path: Path) -> None:
    plain = path.with_suffix(".plain")
    torch.save({"inc.double_conv.0.weight": torch.zeros(1)}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            content = data if item.filename.endswith("data.pkl") else source.read(item)
            target.writestr(item, content)
    plain.unlink()


@pytest.mark.parametrize("container", ["raw", "torch-zip"])
@pytest.mark.parametrize("decoy", sorted(DECOYS))
def test_decoy_strings_do_not_hide_a_code_running_global(
    tmp_path: Path, decoy: str, container: str
) -> None:
    data = _decoy_pickle(DECOYS[decoy])
    # Control: the stream really is os.system("true") for the real unpickler.
    assert [op.name for op, _, _ in pickletools.genops(data)][-4:] == [
        "SHORT_BINUNICODE", "TUPLE1", "REDUCE", "STOP"
    ]  # fmt: skip
    path = tmp_path / "weights.pt"
    if container == "raw":
        path.write_bytes(data)
    else:
        _in_torch_zip(data, path)
    with pytest.raises(UnsafeWeightsError, match=r"os\.system|posix\.system"):
        load_weights(path)
