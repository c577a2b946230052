"""bioimage.io model packages (model spec 0.5): export, and loading without running their code.

**Export** (:func:`export_package`, needs ``pip install 'napari-unetseg[bioimageio]'``) writes a
zip with three weight formats of the same network:

- ``pytorch_state_dict``: plain tensors plus ``unet_architecture.py``, a self-contained copy of
  our U-Net module, and the keyword arguments that build it;
- ``torchscript`` and ``onnx`` (opset 17), converted from it.

Inputs are ``(batch, channel, y, x)`` with ``ParameterizedSize(min=2**depth, step=2**depth)``
spatial axes; preprocessing repeats our normalisation (``scale_range`` per sample and channel
for the percentile method, ``zero_mean_unit_variance`` for zscore, a gain of 1/255 for
classic); the output is softmax probabilities (sigmoid for one-channel models). Test tensors
and the cover are made from a sample plane; our full settings travel in the package's
``config.napari_unetseg`` field.

**Loading** (:func:`load_package`, through ``Segmenter.load("model.zip")``) reads the zip's
``rdf.yaml`` with a safe YAML loader and never fetches a URL. Our own packages come back exactly.
A foreign package loads when it is a 2-D model with one input and one output, and

- its ``pytorch_state_dict`` weights are a U-Net in a layout we read (the Pytorch-UNet family;
  their architecture file is never run), or its ``torchscript`` weights may be run
  (``trust_code=True``: they hold code);
- its preprocessing is none, ``ensure_dtype``, ``scale_range`` or ``zero_mean_unit_variance``
  per sample over y and x, or a gain of 1/255; its postprocessing none, ``softmax`` over
  channels or ``sigmoid``.

Everything else is refused with the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ModelConfig, NormalizationConfig
from .errors import ConfigError, UnetSegError, WeightsFileError
from .trust import read_config_text, refusal

#: Where our settings live in a package's ``config`` field.
CONFIG_KEY = "napari_unetseg"
ARCHITECTURE_FILE = "unet_architecture.py"
ARCHITECTURE_CALLABLE = "NapariUnetsegUNet"
INPUT_ID, OUTPUT_ID = "input", "probabilities"
#: The U-Net paper, cited by every package unless the caller gives other citations.
UNET_CITATION = {
    "text": "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation. MICCAI 2015.",
    "doi": "10.1007/978-3-319-24574-4_28",
}
#: Side of the square test tensors (cropped from the sample; rounded to the network's step).
TEST_SIZE = 128
SCALE_RANGE_EPS = 1e-6
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UnetSegError(
            f"bioimage.io export needs the '{module}' package: "
            "pip install 'napari-unetseg[bioimageio]'."
        ) from None


# --------------------------------------------------------------------------- export helpers


def architecture_source() -> str:
    """Our U-Net module as one file that needs only torch: what a package's state dict builds."""
    from . import model as model_module

    source = inspect.getsource(model_module)
    standalone_config = '''
class ModelConfig:
    """The settings UNet reads (napari_unetseg's own ModelConfig holds more)."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        encoder_channels: list[int],
        decoder_channels: list[int],
        decoder_mid_channels: list[int],
        upsampling: str = "bilinear",
        conv_bias: bool = False,
        members: int = 1,
    ) -> None:
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.encoder_channels = tuple(encoder_channels)
        self.decoder_channels = tuple(decoder_channels)
        self.decoder_mid_channels = tuple(decoder_mid_channels)
        self.upsampling = upsampling
        self.conv_bias = conv_bias
        self.members = members
        self.spatial_dims = 2  # packages hold 2-D models only
        self.z_pooling = ()

    @property
    def depth(self) -> int:
        return len(self.decoder_channels)
'''
    marker = "from .config import ModelConfig\n"
    if marker not in source:  # pragma: no cover - guards a refactoring of model.py
        raise RuntimeError("model.py no longer imports ModelConfig as expected")
    source = source.replace(marker, standalone_config)
    return (
        "# Written by napari-unetseg: its U-Net, standalone (needs only torch).\n"
        + source
        + f'''

class {ARCHITECTURE_CALLABLE}(UNet):
    """The U-Net built from the keyword arguments in the package's rdf.yaml."""

    def __init__(self, **kwargs) -> None:
        super().__init__(ModelConfig(**kwargs))
'''
    )


def architecture_kwargs(config: ModelConfig) -> dict[str, Any]:
    members = {"members": config.members} if config.members > 1 else {}
    return {
        **members,
        "in_channels": config.in_channels,
        "n_classes": config.n_classes,
        "encoder_channels": list(config.encoder_channels),
        "decoder_channels": list(config.decoder_channels),
        "decoder_mid_channels": list(config.decoder_mid_channels),
        "upsampling": config.upsampling,
        "conv_bias": config.conv_bias,
    }


def preprocess(raw: np.ndarray, normalization: NormalizationConfig) -> np.ndarray:
    """What bioimage.io's preprocessing of our packages does to a (C, Y, X) sample."""
    x = raw.astype(np.float32)
    if normalization.method == "percentile":
        low, high = np.percentile(x, [normalization.low, normalization.high], axis=(1, 2))
        low = low.astype(np.float32)[:, None, None]
        high = high.astype(np.float32)[:, None, None]
        scaled: np.ndarray = ((x - low) / (high - low + SCALE_RANGE_EPS)).astype(np.float32)
        return scaled
    if normalization.method == "zscore":
        mean = x.mean(axis=(1, 2), dtype=np.float64)[:, None, None]
        std = x.std(axis=(1, 2), dtype=np.float64)[:, None, None]
        standardised: np.ndarray = ((x - mean) / (std + SCALE_RANGE_EPS)).astype(np.float32)
        return standardised
    if normalization.method == "classic":
        return (x / np.float32(255.0)).astype(np.float32)
    return x


def _identifier(name: str, fallback: str) -> str:
    cleaned = re.sub(r"\W+", "_", name).strip("_")
    return cleaned or fallback


def _output_names(config: ModelConfig) -> list[str]:
    names = list(config.names)
    if config.n_classes == 1:
        names = names[1:]
    names = [_identifier(n, f"class_{i}") for i, n in enumerate(names)]
    # Channel names must be unique.
    return [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]


def _sample_plane(sample: Any, config: ModelConfig) -> np.ndarray:
    """A (C, Y, X) float32 crop of the sample whose sides are multiples of the network's step."""
    if sample is None:
        from .synthetic import nuclei_scene

        image = np.asarray(nuclei_scene().image, dtype=np.float32)
        plane = np.repeat(image[None], config.in_channels, axis=0)
    else:
        plane = np.asarray(sample)
        if plane.ndim == 2 and config.in_channels == 1:
            plane = plane[None]
        if plane.ndim != 3 or plane.shape[0] != config.in_channels:
            raise ConfigError(
                f"the sample must be one plane of shape (Y, X) or (C, Y, X) with the model's "
                f"{config.in_channels} channel(s) first; got shape {plane.shape}."
            )
    step = config.min_size
    side = [min(TEST_SIZE, n) // step * step for n in plane.shape[1:]]
    if min(side) < step:
        raise ConfigError(
            f"the sample plane {plane.shape[1:]} is smaller than the {step} px the network needs."
        )
    top = (plane.shape[1] - side[0]) // 2
    left = (plane.shape[2] - side[1]) // 2
    crop = plane[:, top : top + side[0], left : left + side[1]]
    if not np.isfinite(crop.astype(np.float32)).all():
        raise ConfigError("the sample contains NaN or infinite values.")
    return np.ascontiguousarray(crop, dtype=np.float32)


def _probabilities(model: nn.Module, x: np.ndarray) -> np.ndarray:
    from .predict import logits_to_probabilities

    with torch.no_grad():
        logits = model(torch.from_numpy(x[None]))
    out: np.ndarray = logits_to_probabilities(logits).numpy().astype(np.float32)
    return out


def _cover(raw: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The sample's first channel beside the predicted classes, as an RGB image."""
    gray = raw[0].astype(np.float64)
    low, high = np.percentile(gray, [1, 99.8])
    gray = np.clip((gray - low) / max(high - low, 1e-6), 0, 1)
    left = np.repeat((gray * 255).astype(np.uint8)[..., None], 3, axis=-1)
    palette = np.array(
        [[0, 0, 0], [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [204, 121, 167]],
        np.uint8,
    )
    if probabilities.shape[1] == 1:
        classes = (probabilities[0, 0] > 0.5).astype(np.intp)
    else:
        classes = probabilities[0].argmax(axis=0)
    right = palette[classes % len(palette)]
    right[classes == 0] = left[classes == 0] // 2
    return np.concatenate([left, np.full((left.shape[0], 4, 3), 255, np.uint8), right], axis=1)


def _documentation(config: ModelConfig, name: str, description: str) -> str:
    n = config.normalization
    if n.method == "percentile":
        normalisation = (
            f"per channel, the {n.low} and {n.high} percentiles of the image are mapped to 0 and 1 "
            "(bioimage.io `scale_range` per sample; napari-unetseg uses the whole image or stack)"
        )
    elif n.method == "zscore":
        normalisation = (
            "per channel, the image's mean is subtracted and the result divided by its standard "
            "deviation (bioimage.io `zero_mean_unit_variance` per sample)"
        )
    elif n.method == "classic":
        normalisation = "intensities divided by 255 (8-bit images)"
    else:
        normalisation = "none: intensities are used as they are"
    training = config.training
    lines = [
        f"# {name}",
        "",
        description,
        "",
        "## Use",
        "",
        f"- Input: {config.in_channels} channel(s), 2-D planes (batch, channel, y, x); height and "
        f"width multiples of {config.min_size} px (at least {config.min_size}).",
        f"- Normalisation: {normalisation}.",
        f"- Output: {'sigmoid' if config.n_classes == 1 else 'softmax'} probabilities of "
        f"{', '.join(config.names[1:] if config.n_classes == 1 else config.names)}.",
        "- Task: "
        + (
            "objects (interior and boundary; napari-unetseg splits them into objects)."
            if config.task == "objects"
            else "classes."
        ),
        "",
        "## Training",
        "",
    ]
    if training:
        lines += [f"- {key}: {value}" for key, value in sorted(training.items())]
    else:
        lines.append(f"Not trained with napari-unetseg (origin: {config.origin}).")
    lines += [
        "",
        "## Validation",
        "",
        "The validation Dice above is measured on held-out blocks of the painted labels "
        "(napari-unetseg keeps the weights with the best one). Check the model on images of "
        "your own before relying on it.",
        "",
        "## Architecture",
        "",
        f"U-Net of depth {config.depth}, widths {list(config.encoder_channels)}, "
        f"{config.upsampling} up-sampling. Made with napari-unetseg, which loads this package "
        "back with `Segmenter.load('package.zip')`.",
        "",
    ]
    return "\n".join(lines)


def _authors(authors: Sequence[str | dict[str, Any]] | None) -> list[dict[str, Any]]:
    if not authors:
        raise ConfigError(
            "a bioimage.io package names its authors: pass authors=['Your Name'] "
            "(or dicts with name, affiliation, orcid, github_user)."
        )
    out = []
    for author in authors:
        out.append({"name": author} if isinstance(author, str) else dict(author))
    return out


def _torch_version() -> str:
    return torch.__version__.split("+")[0]


# --------------------------------------------------------------------------- export


def export_package(
    path: str | os.PathLike[str],
    model: nn.Module,
    config: ModelConfig,
    *,
    authors: Sequence[str | dict[str, Any]] | None = None,
    name: str | None = None,
    description: str | None = None,
    license: str = "CC-BY-4.0",
    cite: Sequence[dict[str, str]] | None = None,
    sample: Any = None,
    documentation: str | None = None,
    tags: Sequence[str] = (),
    version: str = "0.1.0",
) -> Path:
    """Write a bioimage.io model package (spec 0.5) of the model; the write is atomic.

    Parameters
    ----------
    authors
        Required: the people who made the model, as names or dicts with ``name`` and optionally
        ``affiliation``, ``email``, ``orcid``, ``github_user``.
    name, description
        Shown in the model zoo; made from the model's settings when not given.
    license
        An SPDX identifier; ``CC-BY-4.0`` (the zoo's usual choice) unless given.
    cite
        Citations as dicts with ``text`` and ``doi`` or ``url``; the U-Net paper when not given.
    sample
        One image plane, ``(Y, X)`` or ``(C, Y, X)``, from which the test tensors and the cover
        are cut (at most 128 x 128 px). Without one, the bundled synthetic nuclei are used; give
        a plane of your own data so the cover shows what the model is for.
    documentation
        Markdown; a page describing inputs, normalisation, classes and training when not given.
    """
    from .atomic_files import atomic_write
    from .export import cpu_copy
    from .weights import config_json

    _require("bioimageio.spec")
    from bioimageio.spec import ValidationContext, save_bioimageio_package
    from bioimageio.spec.model import v0_5

    path = Path(path).expanduser()
    with ValidationContext(perform_io_checks=False):  # no GitHub look-up of github_user
        author_list = [v0_5.Author(**a) for a in _authors(authors)]
    network = cpu_copy(model)
    scripted = isinstance(network, torch.jit.ScriptModule)
    raw = _sample_plane(sample, config)
    kind = "objects" if config.task == "objects" else "semantic segmentation"
    # The zoo allows letters, digits, spaces and _+-() in names.
    name = name or re.sub(
        r"[^\w+\- ()]", "", f"napari-unetseg U-Net ({kind} of {' and '.join(config.names[1:])})"
    )
    description = description or (
        f"A 2-D U-Net for {kind} of {config.in_channels}-channel images into "
        f"{', '.join(config.names)}, trained with napari-unetseg on painted labels."
    )

    with tempfile.TemporaryDirectory(prefix="napari-unetseg-bioimageio-") as folder:
        work = Path(folder)
        _write_package_files(
            work, network, config, raw, documentation or _documentation(config, name, description)
        )
        settings = json.loads(config_json(config))
        try:
            descr = _describe(
                v0_5,
                name=name,
                description=description,
                authors=author_list,
                cite=[v0_5.CiteEntry.model_validate(c) for c in (cite or [UNET_CITATION])],
                license=license,
                documentation=v0_5.FileDescr(source=work / "README.md"),
                covers=[v0_5.FileDescr(source=work / "cover.png")],
                tags=["napari-unetseg", "unet", "2d", "segmentation", *tags],
                version=version,
                inputs=[_input_descr(v0_5, work, config)],
                outputs=[_output_descr(v0_5, work, config)],
                weights=v0_5.WeightsDescr(**_weights_descr(v0_5, work, config, scripted)),
                config={CONFIG_KEY: {"model_config": settings}},
            )
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            raise _spec_error(error) from None

        def write(tmp: Path) -> None:
            save_bioimageio_package(descr, output_path=tmp)

        atomic_write(path, write)
    return path


def _write_package_files(
    work: Path, network: nn.Module, config: ModelConfig, raw: np.ndarray, readme: str
) -> None:
    """Write into ``work`` the files a package holds: test tensors, cover, README, weights."""
    import imageio.v3 as iio
    import tifffile

    from .export import onnx_bytes_to, trace
    from .trust import EXTRA_CONFIG
    from .weights import config_json

    test_input = raw[None]
    test_output = _probabilities(network, preprocess(raw, config.normalization))
    np.save(work / "test_input.npy", test_input)
    np.save(work / "test_output.npy", test_output)
    tifffile.imwrite(work / "sample_input.tif", test_input)
    tifffile.imwrite(work / "sample_output.tif", test_output)
    iio.imwrite(work / "cover.png", _cover(raw, test_output))
    (work / "README.md").write_text(readme, encoding="utf-8")
    torch.jit.save(  # type: ignore[no-untyped-call]
        trace(network, config),
        str(work / "weights_torchscript.pt"),
        _extra_files={EXTRA_CONFIG: config_json(config)},
    )
    onnx_bytes_to(work / "weights.onnx", network, config)
    if not isinstance(network, torch.jit.ScriptModule):
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        torch.save(state, str(work / "weights.pt"))
        (work / ARCHITECTURE_FILE).write_text(architecture_source(), encoding="utf-8")


def _weights_descr(v0_5: Any, work: Path, config: ModelConfig, scripted: bool) -> dict[str, Any]:
    """The weight entries: TorchScript and ONNX, plus the state dict of a non-scripted model."""
    version = v0_5.Version(_torch_version())
    primary = "torchscript" if scripted else "pytorch_state_dict"
    weights: dict[str, Any] = {
        "torchscript": v0_5.TorchscriptWeightsDescr(
            source=work / "weights_torchscript.pt",
            pytorch_version=version,
            parent=None if scripted else "pytorch_state_dict",
        ),
        "onnx": v0_5.OnnxWeightsDescr(
            source=work / "weights.onnx", opset_version=17, parent=primary
        ),
    }
    if not scripted:
        weights["pytorch_state_dict"] = v0_5.PytorchStateDictWeightsDescr(
            source=work / "weights.pt",
            architecture=v0_5.ArchitectureFromFileDescr(
                source=work / ARCHITECTURE_FILE,
                callable=v0_5.Identifier(ARCHITECTURE_CALLABLE),
                kwargs=architecture_kwargs(config),
            ),
            pytorch_version=version,
        )
    return weights


def _preprocessing(v0_5: Any, normalization: NormalizationConfig) -> list[Any]:
    """The spec's steps that reproduce our normalisation of the input."""
    steps: list[Any] = [v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))]
    plane = [v0_5.AxisId("y"), v0_5.AxisId("x")]
    if normalization.method == "percentile":
        steps.append(
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=plane,
                    min_percentile=normalization.low,
                    max_percentile=normalization.high,
                    eps=SCALE_RANGE_EPS,
                )
            )
        )
    elif normalization.method == "zscore":
        steps.append(
            v0_5.ZeroMeanUnitVarianceDescr(
                kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=plane, eps=SCALE_RANGE_EPS)
            )
        )
    elif normalization.method == "classic":
        steps.append(v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=1 / 255, offset=0.0)))
    return steps


def _input_descr(v0_5: Any, work: Path, config: ModelConfig) -> Any:
    step = config.min_size
    return v0_5.InputTensorDescr(
        id=v0_5.TensorId(INPUT_ID),
        description="raw intensities of one 2-D plane",
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[f"channel{i}" for i in range(config.in_channels)]),
            *(
                v0_5.SpaceInputAxis(
                    id=v0_5.AxisId(axis), size=v0_5.ParameterizedSize(min=step, step=step)
                )
                for axis in ("y", "x")
            ),
        ],
        test_tensor=v0_5.FileDescr(source=work / "test_input.npy"),
        sample_tensor=v0_5.FileDescr(source=work / "sample_input.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=_preprocessing(v0_5, config.normalization),
    )


def _output_descr(v0_5: Any, work: Path, config: ModelConfig) -> Any:
    postprocessing: list[Any] = (
        [v0_5.SigmoidDescr()]
        if config.n_classes == 1
        else [v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=v0_5.AxisId("channel")))]
    )
    return v0_5.OutputTensorDescr(
        id=v0_5.TensorId(OUTPUT_ID),
        description="class probabilities",
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=_output_names(config)),
            *(
                v0_5.SpaceOutputAxis(
                    id=v0_5.AxisId(axis),
                    size=v0_5.SizeReference(
                        tensor_id=v0_5.TensorId(INPUT_ID), axis_id=v0_5.AxisId(axis)
                    ),
                )
                for axis in ("y", "x")
            ),
        ],
        test_tensor=v0_5.FileDescr(source=work / "test_output.npy"),
        sample_tensor=v0_5.FileDescr(source=work / "sample_output.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=postprocessing,
    )


def _describe(v0_5: Any, **fields: Any) -> Any:
    return v0_5.ModelDescr(**fields)


def _spec_error(error: Exception) -> UnetSegError:
    import pydantic

    hint = ""
    if tuple(int(p) for p in pydantic.VERSION.split(".")[:2]) >= (2, 13):
        hint = (
            f" bioimageio.core 0.11 fails with pydantic {pydantic.VERSION}; "
            "pip install 'napari-unetseg[bioimageio]' installs the versions that work."
        )
    first = str(error).strip().splitlines()
    return UnetSegError(
        f"the bioimage.io description could not be made ({' '.join(first[:3])[:400]}).{hint}"
    )


# --------------------------------------------------------------------------- loading


@dataclass
class _Package:
    path: Path
    archive: zipfile.ZipFile
    rdf: dict[str, Any]

    def member(self, source: Any, what: str) -> bytes:
        """A file of the package named by a relative path; URLs are never fetched."""
        if isinstance(source, dict):
            source = source.get("source")
        if not isinstance(source, str) or not source:
            raise WeightsFileError(f"{self.path.name}: its {what} name no file.")
        if re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE):
            raise WeightsFileError(
                f"{self.path.name}: its {what} are at {source}, outside the package; "
                "napari-unetseg never downloads files while loading. Download the complete "
                "package (with its weights inside the zip) and load that."
            )
        name = source.removeprefix("./")
        try:
            return self.archive.read(name)
        except KeyError:
            raise WeightsFileError(
                f"{self.path.name}: its {what} ({name!r}) are missing from the zip."
            ) from None


def _yaml(text: bytes, path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise UnetSegError(
            f"reading the bioimage.io package {path.name} needs PyYAML: "
            "pip install 'napari-unetseg[bioimageio]'."
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise WeightsFileError(f"{path.name}: its rdf.yaml is not valid YAML ({error}).") from None
    if not isinstance(data, dict):
        raise WeightsFileError(f"{path.name}: its rdf.yaml does not describe a model.")
    return data


def _axes(tensor: dict[str, Any]) -> list[tuple[str, Any]]:
    """(type, axis) pairs of a 0.5 tensor description, or of a 0.4 axes string."""
    axes = tensor.get("axes")
    if isinstance(axes, str):  # model spec 0.4: "bcyx"
        kinds = {"b": "batch", "c": "channel", "y": "space", "x": "space", "z": "space"}
        return [(kinds.get(a, a), {"id": a}) for a in axes]
    if isinstance(axes, list):
        # Spec 0.5 defaults: a space axis without an id is "x", the others take their type.
        return [
            (str(a.get("type")), {"id": "x" if a.get("type") == "space" else a.get("type"), **a})
            for a in axes
            if isinstance(a, dict)
        ]
    return []


def _check_2d(tensor: dict[str, Any], role: str, path: Path) -> int | None:
    """The tensor's channel count (None when not given); refuses anything but (b)(c)yx."""
    axes = _axes(tensor)
    spatial = [a.get("id") for kind, a in axes if kind == "space"]
    others = [kind for kind, _ in axes if kind not in ("batch", "channel", "space")]
    if spatial != ["y", "x"] or others:
        shown = [a.get("id", kind) for kind, a in axes]
        raise WeightsFileError(
            f"{path.name}: its {role} has axes {shown}; napari-unetseg runs 2-D models on "
            "(batch, channel, y, x) planes only."
        )
    for kind, axis in axes:
        if kind == "channel":
            names = axis.get("channel_names")
            if isinstance(names, list):
                return len(names)
            size = axis.get("size")
            return size if isinstance(size, int) else None
    return None


def _normalization(tensor: dict[str, Any], path: Path, channels: int) -> NormalizationConfig:
    steps = [s for s in tensor.get("preprocessing") or [] if isinstance(s, dict)]
    methods: list[NormalizationConfig] = []
    for step in steps:
        name = step.get("id") or step.get("name")
        kwargs = step.get("kwargs") or {}
        if name == "ensure_dtype":
            continue
        if name in ("scale_range", "zero_mean_unit_variance"):
            _check_statistics(name, kwargs, path, channels)
            if name == "zero_mean_unit_variance":
                methods.append(NormalizationConfig(method="zscore"))
            else:
                methods.append(
                    NormalizationConfig(
                        method="percentile",
                        low=float(kwargs.get("min_percentile", 0.0)),
                        high=float(kwargs.get("max_percentile", 100.0)),
                    )
                )
            continue
        if name == "scale_linear":
            try:  # PyYAML reads "1e-3" as a string
                gain, offset = float(kwargs.get("gain", 1.0)), float(kwargs.get("offset", 0.0))
            except (TypeError, ValueError):
                gain, offset = math.nan, math.nan
            if math.isclose(gain, 1 / 255, rel_tol=1e-4) and offset == 0:
                methods.append(NormalizationConfig(method="classic"))
                continue
        raise WeightsFileError(
            f"{path.name}: its preprocessing step {name!r} ({kwargs}) is not one napari-unetseg "
            "can repeat (it knows ensure_dtype, scale_range and zero_mean_unit_variance over y "
            "and x, and a gain of 1/255), so its predictions here would be wrong."
        )
    if len(methods) > 1:
        raise WeightsFileError(f"{path.name}: it chains several normalisations; not supported.")
    return methods[0] if methods else NormalizationConfig(method="none")


def _check_statistics(name: str, kwargs: dict[str, Any], path: Path, channels: int) -> None:
    """Refuse statistics that napari-unetseg's per-image, per-channel normalisers cannot repeat."""
    axes = kwargs.get("axes")
    names = {"b": "batch", "c": "channel", "i": "index"}
    pooled = {names.get(a, a) for a in axes} if axes is not None else {"batch", "channel"}
    if kwargs.get("reference_tensor") or kwargs.get("mode", "per_sample") != "per_sample":
        raise WeightsFileError(
            f"{path.name}: its {name} preprocessing uses fixed values or statistics of a data "
            "set or another tensor, which napari-unetseg cannot repeat."
        )
    if not {"x", "y"} <= pooled or not pooled <= {"x", "y", "batch", "channel"}:
        raise WeightsFileError(
            f"{path.name}: its {name} preprocessing is computed over axes {axes}; "
            "napari-unetseg normalises over y and x."
        )
    if "channel" in pooled and channels > 1:
        raise WeightsFileError(
            f"{path.name}: its {name} preprocessing pools the channels ({axes}); "
            "napari-unetseg normalises each channel on its own."
        )
    try:  # PyYAML reads "1e-06" as a string
        eps = float(kwargs.get("eps", 1e-6))
    except (TypeError, ValueError):
        eps = math.inf
    if not 0 <= eps <= 1e-4:
        raise WeightsFileError(
            f"{path.name}: its {name} preprocessing uses eps={kwargs.get('eps')}; "
            "napari-unetseg's normalisation matches it only for eps up to 1e-4."
        )


def _check_postprocessing(tensor: dict[str, Any], n_outputs: int | None, path: Path) -> None:
    steps = [s for s in tensor.get("postprocessing") or [] if isinstance(s, dict)]
    names = [str(s.get("id") or s.get("name")) for s in steps if (s.get("id") or s.get("name"))]
    names = [n for n in names if n != "ensure_dtype"]
    if names in (["softmax"], ["sigmoid"]):
        want = "sigmoid" if n_outputs == 1 else "softmax"
        if names[0] != want and n_outputs is not None:
            raise WeightsFileError(
                f"{path.name}: its output of {n_outputs} channel(s) ends with {names[0]}; "
                f"napari-unetseg would apply {want}, so probabilities would differ."
            )
        return
    if not names:
        if n_outputs == 1:
            raise WeightsFileError(
                f"{path.name}: its one-channel output has no sigmoid postprocessing, so it "
                "cannot be told whether the network returns logits or probabilities."
            )
        return  # softmax of the outputs keeps their arg-max: labels are the model's own
    raise WeightsFileError(
        f"{path.name}: its postprocessing {names} is not supported (only softmax over "
        "channels or sigmoid)."
    )


@contextlib.contextmanager
def _weights_file(package: _Package, entry: dict[str, Any], fmt: str) -> Iterator[Path]:
    """The weights file, copied out of the zip into a private folder removed afterwards."""
    data = package.member(entry, f"{fmt} weights")
    with tempfile.TemporaryDirectory(prefix="napari-unetseg-") as folder:
        file = Path(folder) / f"{package.path.stem}-{fmt}.pt"
        file.write_bytes(data)
        yield file


def load_package(path: Path, *, trust_code: bool = False) -> Any:
    """Load a bioimage.io model package (see the module's description); returns LoadedWeights."""
    from . import weights as weights_module

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        rdf_name = next(n for n in RDF_NAMES if n in names)
        package = _Package(path, archive, _yaml(archive.read(rdf_name), path))
        rdf = package.rdf
        if rdf.get("type") != "model":
            raise WeightsFileError(
                f"{path.name} is a bioimage.io {rdf.get('type')!r} package, not a model."
            )
        inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
        if len(inputs) != 1 or len(outputs) != 1:
            raise WeightsFileError(
                f"{path.name}: the model has {len(inputs)} inputs and {len(outputs)} outputs; "
                "napari-unetseg runs models with one image in and one map out."
            )
        channels = _check_2d(inputs[0], "input", path)
        n_outputs = _check_2d(outputs[0], "output", path)
        ours = ((rdf.get("config") or {}).get(CONFIG_KEY) or {}).get("model_config")
        weights = rdf.get("weights") or {}
        reasons: list[str] = []

        # Our own package: our settings, and the state dict read as plain tensors.
        if isinstance(ours, dict) and "pytorch_state_dict" in weights:
            config = read_config_text(json.dumps(ours), path.name)
            state = _safe_state(package, weights["pytorch_state_dict"])
            model = weights_module.build_model(state, config, path)
            return weights_module.LoadedWeights(model, config, path, "bioimageio")

        normalization = _normalization(inputs[0], path, channels or 1)
        _check_postprocessing(outputs[0], n_outputs, path)

        if "pytorch_state_dict" in weights:
            try:
                state = weights_module._unwrap_state_dict(
                    _safe_state(package, weights["pytorch_state_dict"]), path
                )
                config = weights_module.infer_config(state, path).replace(
                    normalization=normalization, origin="bioimageio"
                )
                model = weights_module.build_model(state, config, path)
                return weights_module.LoadedWeights(model, config, path, "bioimageio")
            except WeightsFileError as error:
                reasons.append(f"pytorch_state_dict: {error}")
        if "torchscript" in weights:
            if not trust_code:
                raise refusal(
                    path,
                    "a bioimage.io package whose only weights napari-unetseg can use are "
                    "TorchScript" + (f" ({'; '.join(reasons)})" if reasons else ""),
                )
            with _weights_file(package, weights["torchscript"], "torchscript") as file:
                loaded = weights_module._load_torchscript(file)
            if isinstance(ours, dict):  # ours, exported from a TorchScript model
                config = read_config_text(json.dumps(ours), path.name)
                return weights_module.LoadedWeights(loaded.model, config, path, "bioimageio")
            config = loaded.config
            if channels is not None and config.in_channels != channels:
                raise WeightsFileError(
                    f"{path.name}: its TorchScript weights take {config.in_channels} channels "
                    f"but the package describes {channels}."
                )
            config = config.replace(normalization=normalization, origin="bioimageio")
            return weights_module.LoadedWeights(loaded.model, config, path, "bioimageio")
        for other in sorted(set(weights) - {"pytorch_state_dict", "torchscript"}):
            reasons.append(f"{other}: napari-unetseg runs PyTorch weights only")
    raise WeightsFileError(
        f"{path.name}: none of its weights can be used here ({'; '.join(reasons) or 'none given'})."
    )


def _safe_state(package: _Package, entry: dict[str, Any]) -> Any:
    """The state dict through the weights module's scanned, weights-only loader."""
    from .weights import _torch_load

    with _weights_file(package, entry, "pytorch_state_dict") as file:
        return _torch_load(file, is_zip=file.read_bytes()[:4] == b"PK\x03\x04")


def read_rdf(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The rdf.yaml of a package, read safely (for ``info`` and for tests)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        rdf_name = next((n for n in RDF_NAMES if n in names), None)
        if rdf_name is None:
            raise WeightsFileError(f"{path.name} is a zip without rdf.yaml: not bioimage.io.")
        return _yaml(archive.read(rdf_name), path)


def requires_trust(path: Path) -> bool:
    """True when the package loads only with ``trust_code=True`` (checked by a safe load)."""
    from .errors import TrustRequiredError

    try:
        load_package(path, trust_code=False)
    except TrustRequiredError:
        return True
    except (UnetSegError, OSError, zipfile.BadZipFile):
        return False  # the real load reports the problem
    return False
