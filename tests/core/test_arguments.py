"""Issue 14: bad arguments and hostile files read as advice (items 11, 12, 14, 15)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core import resources as resources_module
from napari_unetseg.core.config import ModelConfig, NormalizationConfig, PredictConfig
from napari_unetseg.core.errors import ConfigError, InputError, WeightsFileError
from napari_unetseg.core.weights import METADATA_KEY

QUICK = TrainConfig(max_seconds=None, max_epochs=1, steps_per_epoch=1, batch_size=2, patch_size=32)
IMAGE = np.random.default_rng(0).random((48, 48)).astype(np.float32)
PAINTED = np.zeros((48, 48), np.uint8)
PAINTED[5:10, 5:20] = 1
PAINTED[30:35, 5:20] = 2


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return Segmenter.create(base_width=4, depth=2, device="cpu")


# --------------------------------------------------------------------------- item 15


WRONG_TYPES: list[tuple[str, Callable[[Segmenter], Any], type[Exception], str]] = [
    ("axes=123", lambda s: s.segment(IMAGE, axes=123), InputError, r"axes=123 .*'YX'"),
    ("device=None", lambda s: s.segment(IMAGE, device=None), ConfigError, r"device=None"),
    ("create device=None", lambda s: Segmenter.create(device=None), ConfigError, "device=None"),
    ("tile_size='big'", lambda s: s.segment(IMAGE, tile_size="big"), ConfigError,
     r"tile_size='big' \(str\).*whole number"),
    ("tile_size=64.5", lambda s: s.segment(IMAGE, tile_size=64.5), ConfigError,
     r"tile_size=64\.5.*whole number"),
    ("unknown override", lambda s: s.segment(IMAGE, tile=64), ConfigError,
     r"\['tile'\].*tile_size"),
    ("max_seconds='10'", lambda s: TrainConfig(max_seconds="10"), ConfigError,
     r"max_seconds='10'.*a number or None"),
    ("max_epochs=1.5", lambda s: TrainConfig(max_epochs=1.5), ConfigError, r"max_epochs=1\.5"),
    ("in_channels='3'", lambda s: Segmenter.create(in_channels="3"), ConfigError,
     r"in_channels='3'"),
    ("seed='x'", lambda s: Segmenter.create(seed="x"), ConfigError, r"seed='x'"),
    ("config=3", lambda s: s.segment(IMAGE, config=3), ConfigError, r"config=3.*PredictConfig"),
    ("train config=list", lambda s: s.train(IMAGE, PAINTED, [1]), ConfigError,
     r"config=\[1\].*TrainConfig"),
    ("torch tensor", lambda s: s.segment(torch.zeros(48, 48)), InputError, r"numpy\(\)"),
    ("planes=[5]", lambda s: s.segment(np.zeros((2, 48, 48)), planes=[5]), ConfigError,
     r"planes entry 5.*tuple of 1"),
    ("planes=[(7,)]", lambda s: s.segment(np.zeros((2, 48, 48)), planes=[(7,)]), ConfigError,
     r"\(7,\) is not a plane.*\(2,\)"),
    ("planes=[(0, 0)]", lambda s: s.segment(np.zeros((2, 48, 48)), planes=[(0, 0)]),
     ConfigError, r"tuple of 1 indices"),
    ("planes='all'", lambda s: s.segment(IMAGE, planes="all"), ConfigError, r"planes='all'"),
    ("(64, 64, 1)", lambda s: s.segment(np.zeros((64, 64, 1))), InputError, r"axes='YXC'"),
    ("(64, 64, 2)", lambda s: s.segment(np.zeros((64, 64, 2))), InputError,
     r"2 channels.*image\[\.\.\., 0\]"),
    ("class_names=[1, 2]", lambda s: Segmenter.create(class_names=[1, 2]), ConfigError,
     r"class_names=\[1, 2\].*strings"),
    ("augment='no'", lambda s: TrainConfig(augment="no"), ConfigError, r"True or False"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [case[1:] for case in WRONG_TYPES],
    ids=[case[0] for case in WRONG_TYPES],
)
def test_wrong_arguments_are_advice(
    seg: Segmenter, call: Callable[[Segmenter], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call(seg)


def test_settings_given_as_dicts_work_like_settings_objects(seg: Segmenter) -> None:
    as_dict = seg.segment(IMAGE, config={"tile_size": 32, "overlap": 0})
    as_object = seg.segment(IMAGE, config=PredictConfig(tile_size=32, overlap=0))
    np.testing.assert_array_equal(as_dict, as_object)
    model = Segmenter.create(base_width=4, depth=2, normalization={"method": "none"})
    assert model.config.normalization == NormalizationConfig(method="none")
    assert TrainConfig(normalization={"method": "classic"}).normalization.method == "classic"
    trained = Segmenter.create(base_width=4, depth=2, device="cpu")
    history = trained.train(IMAGE, PAINTED, {**QUICK.to_dict(), "normalization": None})
    assert history.steps == 1
    with pytest.raises(ConfigError, match=r"unknown train settings \['epochs'\]"):
        trained.train(IMAGE, PAINTED, {"epochs": 3})


def test_numpy_numbers_are_accepted_as_settings() -> None:
    config = TrainConfig(batch_size=np.int64(4), learning_rate=np.float32(0.01), max_epochs=2.0)
    assert type(config.batch_size) is int and config.batch_size == 4
    assert type(config.max_epochs) is int


@pytest.mark.parametrize(("mode", "top"), [("sparse", 2**64 - 1), ("dense", 70000)])
def test_huge_painted_values_do_not_suggest_a_huge_model(mode: str, top: int) -> None:
    painted = np.zeros((48, 48), np.uint64)
    painted[5:10, 5:20] = 1
    painted[30:35, 5:20] = top
    seg = Segmenter.create(base_width=4, depth=2, device="cpu")
    with pytest.raises(InputError, match=r"mode='objects") as error:
        seg.train(IMAGE, painted, QUICK.replace(mode=mode))
    assert f"n_classes={top}" not in str(error.value)


# --------------------------------------------------------------------------- item 14


def _with_settings(tmp_path: Path, change: dict[str, Any], suffix: str) -> Path:
    seg = Segmenter.create(base_width=4, depth=2, device="cpu")
    path = seg.save(tmp_path / f"model{suffix}")
    data = {**seg.config.to_dict(), **change}
    text = json.dumps(data)
    if suffix == ".safetensors":
        state = {k: v.contiguous() for k, v in seg.model.state_dict().items()}
        save_file(state, str(path), metadata={METADATA_KEY: text})
    else:  # a plain state dict with the settings beside it
        torch.save(dict(seg.model.state_dict()), path)
        path.with_suffix(".json").write_text(text)
    return path


HOSTILE = {
    "normalization as a string": {"normalization": "none"},
    "class names as numbers": {"class_names": [1, 2]},
    "training as a list": {"training": [1, 2]},
    "runs as text": {"training": {"runs": "many"}},
    "nested training": {"training": {"a": json.loads("[" * 50 + "]" * 50)}},
    "n_classes as a float": {"n_classes": 5e7},
    "in_channels as text": {"in_channels": "3"},
}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("change", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_metadata_is_refused_at_load(
    tmp_path: Path, change: dict[str, Any], suffix: str
) -> None:
    path = _with_settings(tmp_path, change, suffix)
    with pytest.raises(WeightsFileError, match=str(next(iter(change)))):
        Segmenter.load(path)


def test_deeply_nested_metadata_is_refused_at_load(tmp_path: Path) -> None:
    seg = Segmenter.create(base_width=4, depth=2, device="cpu")
    path = tmp_path / "deep.safetensors"
    state = {k: v.contiguous() for k, v in seg.model.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: "[" * 100_000 + "]" * 100_000})
    with pytest.raises(WeightsFileError, match="nested too deeply"):
        Segmenter.load(path)
    # The same beside a .pt file is someone else's JSON: the weights load with their layout.
    torch.save(dict(seg.model.state_dict()), tmp_path / "deep.pt")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert Segmenter.load(tmp_path / "deep.pt").config.in_channels == 1


def test_validated_settings_describe_themselves(tmp_path: Path) -> None:
    path = _with_settings(
        tmp_path,
        {"training": {"steps": np.int64(3).item(), "best_validation_dice": 0.5, "note": "x"}},
        ".safetensors",
    )
    described = Segmenter.load(path).describe()
    assert "3 steps" in described and "0.500" in described


def test_a_saturated_validation_is_not_described_as_a_dice(tmp_path: Path) -> None:
    training = {"steps": 300, "best_validation_dice": 1.0, "validation_saturated": True}
    path = _with_settings(tmp_path, {"training": training}, ".safetensors")
    described = Segmenter.load(path).describe()
    assert "held-out strokes all right (not a test of the borders)" in described
    assert "1.000" not in described
    with pytest.raises(WeightsFileError, match="validation_saturated"):
        Segmenter.load(
            _with_settings(tmp_path, {"training": {"validation_saturated": "yes"}}, ".pt")
        )


# --------------------------------------------------------------------------- item 11

PEAK_MEMORY = """
import resource, sys
from napari_unetseg.core.errors import WeightsFileError
from napari_unetseg.core.weights import load_weights
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_weights(sys.argv[1])
except WeightsFileError as error:
    print("refused:", error)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("peak_increase_kib", after - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB")
def test_settings_claiming_a_huge_network_cost_nothing_to_refuse(tmp_path: Path) -> None:
    seg = Segmenter.create(base_width=4, depth=2, device="cpu")
    # A small file whose settings claim a 6000-wide bottleneck (a 1.3 GB network).
    claim = seg.config.replace(encoder_channels=(4, 8, 6000)).to_json()
    state = {k: v.contiguous() for k, v in seg.model.state_dict().items()}
    path = tmp_path / "claims.safetensors"
    save_file(state, str(path), metadata={METADATA_KEY: claim})
    assert path.stat().st_size < 200_000
    src = str(Path(__import__("napari_unetseg").__file__).resolve().parents[1])
    run = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert "refused:" in run.stdout and "down2" in run.stdout, run.stdout + run.stderr
    increase_mib = int(run.stdout.split("peak_increase_kib")[1]) / 1024
    assert increase_mib < 300, increase_mib


# --------------------------------------------------------------------------- item 12


@pytest.fixture
def half_a_gib_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources_module, "available_memory", lambda device=None: 2**29)


def test_a_model_too_large_for_memory_is_refused_with_advice(half_a_gib_free: None) -> None:
    with pytest.raises(ConfigError, match=r"GiB.*0\.5 GiB.*smaller base_width"):
        Segmenter.create(base_width=256)
    assert Segmenter.create(base_width=16).config.encoder_channels[0] == 16


def test_training_too_large_for_memory_is_refused_before_it_starts(half_a_gib_free: None) -> None:
    image = np.random.default_rng(1).random((256, 256)).astype(np.float32)
    painted = np.zeros((256, 256), np.uint8)
    painted[10:20, 10:200] = 1
    painted[100:110, 10:200] = 2
    seg = Segmenter.create(base_width=16, device="cpu")
    big = QUICK.replace(batch_size=16, patch_size=256)
    with pytest.raises(ConfigError, match=r"16 patches of 256² px.*batch_size \(now 16\)"):
        seg.train(image, painted, big)
    assert seg.is_trained is False
    assert seg.train(image, painted, QUICK).steps == 1


def test_memory_estimates_grow_with_the_setting() -> None:
    seg = Segmenter.create(device="cpu")
    config = seg.config
    small = resources_module.training_bytes(seg.model, config, 8, 128)
    assert 20e6 < small < 1e9
    assert resources_module.training_bytes(seg.model, config, 32, 128) > 3.5 * small
    assert seg.model.training is False
    assert resources_module.parameter_bytes(ModelConfig.native(base_width=32)) > 3.5 * (
        resources_module.parameter_bytes(config)
    )
