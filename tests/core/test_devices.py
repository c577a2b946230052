"""Device selection and inference precision, with CUDA and MPS faked (no GPU needed)."""

from __future__ import annotations

import types

import pytest
import torch

from napari_unetseg.core import devices
from napari_unetseg.core.devices import (
    available_devices,
    cpu_flags_have_bfloat16,
    inference_dtype,
    select_device,
)
from napari_unetseg.core.errors import ConfigError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends, "mps", types.SimpleNamespace(is_available=lambda: False))


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends, "mps", types.SimpleNamespace(is_available=lambda: False))


@pytest.fixture
def fake_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends, "mps", types.SimpleNamespace(is_available=lambda: True))


def test_cpu_only(no_gpu):
    assert available_devices() == ["cpu"]
    assert select_device("auto") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")


def test_cuda_is_preferred(fake_cuda):
    assert available_devices() == ["cuda", "cpu"]
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda:1")
    assert select_device(torch.device("cpu")) == torch.device("cpu")


def test_mps_when_no_cuda(fake_mps):
    assert available_devices() == ["mps", "cpu"]
    assert select_device("auto") == torch.device("mps")


def test_torch_without_mps_backend(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.backends, "mps", raising=False)
    assert available_devices() == ["cpu"]


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps"])
def test_unavailable_device_says_what_is_available(no_gpu, name):
    with pytest.raises(ConfigError, match=r"not available here.*available: cpu"):
        select_device(name)


@pytest.mark.parametrize("name", ["gpu", "tpu", "", "cuda0"])
def test_unknown_device_is_refused(name):
    with pytest.raises(ConfigError, match="is not one of"):
        select_device(name)


@pytest.mark.parametrize(
    ("precision", "expected"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)],
)
@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_explicit_precision_is_obeyed(device, precision, expected):
    assert inference_dtype(torch.device(device), precision) is expected


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision"):
        inference_dtype(torch.device("cpu"), "int8")


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cpu_uses_bfloat16_only_where_native(monkeypatch, native, expected):
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: native)
    assert inference_dtype(torch.device("cpu"), "auto") is expected


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert inference_dtype(torch.device("cuda"), "auto") is expected


def test_auto_on_mps_stays_float32(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: True)
    assert inference_dtype(torch.device("mps"), "auto") is torch.float32


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", True),
        ("fpu sse avx2 amx_tile amx_bf16 amx_int8", True),
        ("fpu sse avx2 avx512f avx512bw", False),
        ("fpu sse avx2 avx512_bf16x", False),
        ("", False),
    ],
)
def test_bfloat16_flags(flags, expected):
    cpuinfo = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
    assert cpu_flags_have_bfloat16(cpuinfo) is expected


def test_no_cpuinfo_means_no_bfloat16():
    assert cpu_flags_have_bfloat16("") is False
    assert isinstance(devices.cpu_has_native_bfloat16(), bool)
