"""Every weights file format in one place: reading safely, inferring foreign layouts, atomic saves.

Formats read:

- native ``.safetensors``: weights plus our JSON config in the file's metadata;
- the classic Pytorch-UNet state dicts (``inc``, ``down1..``, ``up1..``, ``outc``; bilinear or
  transposed-conv up-sampling), as ``.pth``/``.pt`` or ``.safetensors``; channels, classes and
  variant come from the tensor shapes;
- our own model's plain ``state_dict`` saved with ``torch.save`` (with or without a JSON file
  of the same name beside it);
- TorchScript archives.

Nothing here unpickles arbitrary objects: ``torch.load`` always runs with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import ModelConfig, NormalizationConfig
from .errors import UnsafeWeightsError, WeightsFileError
from .model import UNet

METADATA_KEY = "napari_unetseg.config"
FORMAT_HELP = (
    "napari-unetseg reads .safetensors (its own files and plain state dicts), PyTorch state dicts "
    "(.pt/.pth, including the classic Pytorch-UNet layout) and TorchScript archives"
)
#: Keys of checkpoint dictionaries that may wrap the state dict.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


@dataclass
class LoadedWeights:
    """A ready model and the config that says how to use it."""

    model: nn.Module
    config: ModelConfig
    path: Path
    format: str


# --------------------------------------------------------------------------- saving


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` then rename over ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_weights(path: str | os.PathLike[str], model: nn.Module, config: ModelConfig) -> Path:
    """Save as native ``.safetensors`` (weights + config) or ``.pt``/``.pth`` plus a JSON beside it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if isinstance(model, torch.jit.ScriptModule):
        if suffix not in (".pt", ".pth"):
            raise WeightsFileError(
                f"{path.name}: a TorchScript model can only be saved as .pt or .pth (TorchScript)."
            )
        atomic_write(path, lambda tmp: torch.jit.save(model, str(tmp)))
    elif suffix == ".safetensors":
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        metadata = {METADATA_KEY: config.to_json(), "format": "pt"}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    elif suffix in (".pt", ".pth"):
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: torch.save(state, str(tmp)))
    else:
        raise WeightsFileError(
            f"cannot save to {path.name}: use a .safetensors name (recommended) or .pt/.pth."
        )
    if suffix in (".pt", ".pth"):
        text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
        atomic_write(sidecar_path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


# --------------------------------------------------------------------------- reading


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return 0 < header_length <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as error:
        raise WeightsFileError(f"{path.name} looks like safetensors but cannot be read ({error}).") from error
    return tensors, metadata


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)|global ['\"]?([\w.]+)", str(error))
        what = next((g for g in found.groups() if g), "") if found else ""
        raise UnsafeWeightsError(
            f"refused to load {path.name}: it holds Python objects{f' ({what})' if what else ''} "
            "that would run code when unpickled, so it was not opened. napari-unetseg only loads "
            "plain weights; ask for a state_dict or .safetensors file from a trusted source."
        ) from None
    except Exception as error:
        raise WeightsFileError(
            f"cannot read {path.name}: the file is damaged, truncated or not a weights file "
            f"({type(error).__name__}). {FORMAT_HELP}."
        ) from None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if state:
            # Strip wrappers added by DataParallel and torch.compile.
            return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}
    raise WeightsFileError(
        f"{path.name} holds no tensors napari-unetseg recognises (found {type(obj).__name__}). {FORMAT_HELP}."
    )


def infer_config(state: Mapping[str, torch.Tensor], path: Path | None = None) -> ModelConfig:
    """Rebuild the layout of a Pytorch-UNet-style state dict from its tensor shapes."""
    name = path.name if path else "the state dict"
    key = "inc.double_conv.0.weight"
    if key not in state:
        raise WeightsFileError(
            f"{name} is not a U-Net in the Pytorch-UNet layout (no '{key}'; its first keys are "
            f"{list(state)[:4]}). {FORMAT_HELP}."
        )
    depth = 0
    while f"down{depth + 1}.maxpool_conv.1.double_conv.0.weight" in state:
        depth += 1
    if depth == 0 or f"up{depth}.conv.double_conv.0.weight" not in state or "outc.conv.weight" not in state:
        raise WeightsFileError(f"{name}: the U-Net layout is incomplete (down/up/outc blocks missing).")
    encoder = [int(state[key].shape[0])]
    encoder += [int(state[f"down{i}.maxpool_conv.1.double_conv.3.weight"].shape[0]) for i in range(1, depth + 1)]
    decoder = [int(state[f"up{i}.conv.double_conv.3.weight"].shape[0]) for i in range(1, depth + 1)]
    mids = [int(state[f"up{i}.conv.double_conv.0.weight"].shape[0]) for i in range(1, depth + 1)]
    return ModelConfig(
        in_channels=int(state[key].shape[1]),
        n_classes=int(state["outc.conv.weight"].shape[0]),
        encoder_channels=tuple(encoder),
        decoder_channels=tuple(decoder),
        decoder_mid_channels=tuple(mids),
        upsampling="transposed" if "up1.up.weight" in state else "bilinear",
        conv_bias="inc.double_conv.0.bias" in state,
        # The classic project's preprocessing: uint8 scaled to [0, 1].
        normalization=NormalizationConfig(method="classic"),
        origin="pytorch-unet",
    )


def build_model(state: Mapping[str, torch.Tensor], config: ModelConfig, path: Path) -> UNet:
    model = UNet(config)
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1:3]
        raise WeightsFileError(
            f"{path.name}: the weights do not fit the U-Net layout they appear to have "
            f"({' '.join(s.strip() for s in first)}). {FORMAT_HELP}."
        ) from None
    model.eval()
    return model


def _read_sidecar(path: Path) -> ModelConfig | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        return ModelConfig.from_json(side.read_text(encoding="utf-8"))
    except (ValueError, TypeError) as error:
        raise WeightsFileError(f"{side.name} (settings beside {path.name}) cannot be read: {error}") from None


def _torchscript_config(model: torch.jit.ScriptModule, path: Path) -> ModelConfig:
    convs = [p for p in model.parameters() if p.ndim == 4]
    if not convs:
        raise WeightsFileError(f"{path.name}: TorchScript model has no convolution weights.")
    in_channels = int(convs[0].shape[1])
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, in_channels, 64, 64))
    except Exception as error:
        raise WeightsFileError(
            f"{path.name}: the TorchScript model does not take a (1, {in_channels}, 64, 64) image "
            f"({type(error).__name__})."
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[-2:] != (64, 64):
        raise WeightsFileError(f"{path.name}: the TorchScript model does not return (N, C, H, W) logits.")
    # Placeholder widths: a TorchScript model is never rebuilt, depth 5 keeps tiles multiples of 32.
    return ModelConfig(
        in_channels=in_channels,
        n_classes=int(out.shape[1]),
        encoder_channels=(1,) * 6,
        decoder_channels=(1,) * 5,
        decoder_mid_channels=(1,) * 5,
        normalization=NormalizationConfig(method="classic"),
        origin="torchscript",
    )


def load_weights(path: str | os.PathLike[str]) -> LoadedWeights:
    """Read any supported weights file into a model on the CPU, with its config."""
    path = Path(path)
    if not path.exists():
        raise WeightsFileError(f"no weights file at {path}.")
    if path.is_dir():
        raise WeightsFileError(f"{path} is a folder; choose a weights file inside it. {FORMAT_HELP}.")
    size = path.stat().st_size
    if size == 0:
        raise WeightsFileError(f"{path.name} is empty (0 bytes). {FORMAT_HELP}.")
    with open(path, "rb") as handle:
        head = handle.read(16)

    if _is_safetensors(head, size):
        tensors, metadata = _read_safetensors(path)
        if METADATA_KEY in metadata:
            try:
                config = ModelConfig.from_json(metadata[METADATA_KEY])
            except (ValueError, TypeError) as error:
                raise WeightsFileError(f"{path.name}: its stored settings are invalid ({error}).") from None
            return LoadedWeights(build_model(tensors, config, path), config, path, "native")
        state = _unwrap_state_dict(tensors, path)
        config = infer_config(state, path)
        return LoadedWeights(build_model(state, config, path), config, path, "safetensors")

    if head.startswith(b"PK\x03\x04") and _is_torchscript(path):
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:
            raise WeightsFileError(f"{path.name}: TorchScript archive cannot be read ({error}).") from None
        scripted.eval()
        config = _read_sidecar(path) or _torchscript_config(scripted, path)
        return LoadedWeights(scripted, config.replace(origin="torchscript"), path, "torchscript")

    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise WeightsFileError(f"{path.name} is not a weights file napari-unetseg knows. {FORMAT_HELP}.")
    state = _unwrap_state_dict(_torch_load(path), path)
    sidecar = _read_sidecar(path)
    config = sidecar or infer_config(state, path)
    return LoadedWeights(build_model(state, config, path), config, path, "state_dict")
