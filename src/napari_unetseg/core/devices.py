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
    if not isinstance(preference, str):
        raise ConfigError(
            f"device={preference!r} ({type(preference).__name__}) cannot be used: pass 'auto', "
            "'cpu', 'cuda', 'cuda:N' or 'mps'."
        )
    preference = preference.strip().lower()
    if preference == "auto":
        return torch.device(available_devices()[0])
    kind = preference.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError(
            f"device {preference!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'."
        )
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


#: /proc/cpuinfo flags of CPUs that compute bfloat16 matrix products in hardware.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags_have_bfloat16(cpuinfo: str) -> bool:
    """True when a /proc/cpuinfo text lists AVX-512 BF16 or AMX-BF16 among its flags."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            flags = set(line.split(":", 1)[1].split())
            return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)
    return False


@functools.lru_cache(maxsize=1)
def cpu_has_native_bfloat16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX), where it is faster.

    Elsewhere bfloat16 is emulated and slower than float32, so ``precision="auto"`` keeps
    float32. Only Linux is probed; other systems answer False.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpuinfo = handle.read()
    except OSError:
        return False
    if not cpu_flags_have_bfloat16(cpuinfo):
        return False
    mkldnn = getattr(torch.ops, "mkldnn", None)
    check = getattr(mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except RuntimeError:  # pragma: no cover - a torch built without oneDNN
        return False


def inference_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The autocast dtype for inference, or float32 when lower precision would not help.

    ``"auto"``: bfloat16 on CUDA GPUs that support it, else float16; bfloat16 on CPUs that
    compute it natively (measured faster, and agreeing with float32 on over 99.5 % of
    pixels: see docs/benchmarks.md); float32 on other CPUs and on Apple MPS.
    """
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "float16":
        return torch.float16
    if precision != "auto":
        raise ConfigError(
            f"precision={precision!r} is not one of 'auto', 'float32', 'bfloat16', 'float16'."
        )
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bfloat16():
        return torch.bfloat16
    return torch.float32


def channels_last_format(device: torch.device, spatial_dims: int) -> torch.memory_format:
    """The channels-last layout for a ``spatial_dims`` network on ``device``: the inference
    copy's (:mod:`napari_unetseg.core.inference_network`). Apple MPS is untested and keeps
    the plain layout.

    Training keeps the plain layout. Channels-last made a training step about 1.5x faster
    in 3-D and 1.1-1.2x in 2-D on an AVX2 CPU (``python -m benchmarks.memory_layout``), but
    3-D models trained that way scored lower on the real stacks (docs/benchmarks.md).
    """
    if device.type not in ("cpu", "cuda"):
        return torch.contiguous_format
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
