"""Choosing the compute device and the precision that is safe and fast on it."""

from __future__ import annotations

import functools
import platform

import torch

from .errors import ConfigError


def available_devices() -> list[str]:
    """Devices usable here, best first; always ends with ``"cpu"``."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def select_device(preference: str | torch.device = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU for ``"auto"``; otherwise the named device, checked."""
    if isinstance(preference, torch.device):
        preference = str(preference)
    preference = preference.strip().lower()
    if preference == "auto":
        return torch.device(available_devices()[0])
    kind = preference.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {preference!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'.")
    if kind not in available_devices():
        raise ConfigError(
            f"device {preference!r} was asked for but is not available here "
            f"(available: {', '.join(available_devices())}). Use device='auto' or 'cpu'."
        )
    return torch.device(preference)


def describe_device(device: torch.device) -> str:
    """A short text for people: which device computes, and what it is."""
    if device.type == "cuda":
        return f"GPU (CUDA): {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "GPU (Apple MPS)"
    threads = torch.get_num_threads()
    return f"CPU ({platform.processor() or platform.machine()}, {threads} threads); no GPU found"


@functools.lru_cache(maxsize=1)
def cpu_has_native_bfloat16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX), where it is faster."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def inference_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The autocast dtype for inference, or float32 when lower precision would not help."""
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "float16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bfloat16():
        return torch.bfloat16
    return torch.float32
