"""Export a model for other tools: TorchScript, ONNX, and bioimage.io packages.

- **TorchScript** (``.ts``/``.torchscript``): the model traced on the CPU in float32, with our
  settings stored inside the archive (``extra/napari_unetseg.config.json``), so
  ``Segmenter.load(path, trust_code=True)`` gets them back and plain ``torch.jit.load`` runs it.
- **ONNX** (``.onnx``): opset 17, input ``(batch, channels, height, width)`` with dynamic batch
  and spatial axes; height and width must be multiples of the model's minimum size
  (``2 ** depth``). Runs under onnxruntime. Needs the ``onnx`` package (``[export]`` extra).
- **bioimage.io** (``.zip``): see :mod:`napari_unetseg.core.bioimageio`.

Every file is written to a temporary name and renamed into place (:func:`atomic_files.atomic_write`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic_files import atomic_write
from .config import ModelConfig
from .errors import ConfigError, UnetSegError, WeightsFileError
from .trust import EXTRA_CONFIG
from .weights import config_json, refuse_non_finite_save

FORMATS = ("bioimageio", "onnx", "torchscript")
SUFFIXES = {
    ".zip": "bioimageio",
    ".onnx": "onnx",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
}
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_format(path: Path, format: str | None) -> str:
    """The format named, or the one ``path``'s suffix stands for."""
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(
                f"export format {format!r} is not one of {', '.join(map(repr, FORMATS))}."
            )
        return format
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise ConfigError(
            f"cannot tell the export format from {path.name!r}: name the file .zip (bioimage.io), "
            ".onnx or .ts/.torchscript (TorchScript), or pass format=..."
        )
    return found


def example_size(config: ModelConfig) -> int:
    """A square side that every level of the U-Net divides: at least 64 px."""
    return max(64, 2 * config.min_size)


def cpu_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode; the model itself (maybe on a GPU) is left as it is."""
    if isinstance(model, torch.jit.ScriptModule):
        copied: nn.Module = copy.copy(model)  # TorchScript cannot be deep-copied
        return copied.to("cpu").float().eval()
    copied = copy.deepcopy(model).to("cpu").float()
    for parameter in copied.parameters():
        parameter.data = parameter.data.contiguous()
    return copied.eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Tracing warns about our shape checks (constant in a trace) and about torch.jit's future."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def trace(model: nn.Module, config: ModelConfig) -> torch.jit.ScriptModule:
    """The model as TorchScript, traced on the CPU in float32."""
    network = cpu_copy(model)
    if isinstance(network, torch.jit.ScriptModule):
        return network
    size = example_size(config)
    example = torch.zeros(1, config.in_channels, size, size)
    with _quiet(), torch.no_grad():
        traced: torch.jit.ScriptModule = torch.jit.trace(network, example, check_trace=False)
    return traced


def export_torchscript(path: Path, model: nn.Module, config: ModelConfig) -> Path:
    traced = trace(model, config)
    extra = {EXTRA_CONFIG: config_json(config, indent=2)}

    def write(tmp: Path) -> None:
        with _quiet():
            torch.jit.save(traced, str(tmp), _extra_files=extra)  # type: ignore[no-untyped-call]

    atomic_write(path, write)
    return path


def _require(module: str, extra: str = "export") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UnetSegError(
            f"this export needs the '{module}' package: pip install 'napari-unetseg[{extra}]'."
        ) from None


def onnx_bytes_to(path: Path, model: nn.Module, config: ModelConfig) -> None:
    """Write the model as ONNX to ``path`` (not atomic: callers give a temporary name)."""
    _require("onnx")
    network = cpu_copy(model)
    size = example_size(config)
    example = torch.zeros(1, config.in_channels, size, size)
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with _quiet():
            # The TorchScript-based exporter: fast, and it takes TorchScript models too.
            torch.onnx.export(
                network,
                (example,),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                opset_version=ONNX_OPSET,
            )
    except Exception as error:
        raise WeightsFileError(
            f"the model could not be exported to ONNX ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})."
        ) from None


def export_onnx(path: Path, model: nn.Module, config: ModelConfig) -> Path:
    atomic_write(path, lambda tmp: onnx_bytes_to(tmp, model, config))
    return path


def export_model(
    path: str | os.PathLike[str],
    model: nn.Module,
    config: ModelConfig,
    format: str | None = None,
    **bioimageio: Any,
) -> Path:
    """Write ``model`` as ``format`` (or the format ``path``'s suffix names); returns the path."""
    path = Path(path).expanduser()
    chosen = export_format(path, format)
    if path.is_dir():
        raise WeightsFileError(f"cannot export to {path}: it is a folder; give a file name.")
    refuse_non_finite_save(model, path)
    if config.spatial_dims == 3:
        raise ConfigError(
            f"{chosen} export of a 3-D model is not supported yet: other tools would read it as "
            "a 2-D network. Save it with Segmenter.save (.safetensors) and use it in "
            "napari-unetseg, or train a 2-D model to export."
        )
    if bioimageio and chosen != "bioimageio":
        raise ConfigError(
            f"{', '.join(sorted(bioimageio))}: only bioimage.io exports take these details."
        )
    if chosen == "torchscript":
        return export_torchscript(path, model, config)
    if chosen == "onnx":
        return export_onnx(path, model, config)
    from .bioimageio import export_package

    return export_package(path, model, config, **bioimageio)
