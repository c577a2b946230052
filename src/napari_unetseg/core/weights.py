"""Every weights file format in one place: reading safely, inferring foreign layouts, saving.

Formats read:

- native ``.safetensors``: weights plus our JSON config in the file's metadata;
- the classic Pytorch-UNet state dicts (``inc``, ``down1..``, ``up1..``, ``outc``; bilinear or
  transposed-conv up-sampling), as ``.pth``/``.pt`` or ``.safetensors``, bare or inside a
  checkpoint dictionary; channels, classes and variant come from the tensor shapes;
- our own model's plain ``state_dict`` saved with ``torch.save`` (with or without a JSON file
  of the same name beside it);
- TorchScript archives, only with the user's consent (``trust_code=True``): they hold code;
- bioimage.io model packages (``.zip``), see :mod:`napari_unetseg.core.bioimageio`.

Nothing here unpickles arbitrary objects: every pickle is first scanned without being run
(:mod:`.pickle_scan`) and refused when it names anything but tensors and plain containers,
and ``torch.load`` then always runs with ``weights_only=True``. Saves are atomic
(:mod:`.atomic_files`).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .atomic_files import atomic_write_many, create_temporary
from .config import ModelConfig, NormalizationConfig
from .errors import UnetSegError, UnsafeWeightsError, WeightsFileError
from .model import UNet
from .pickle_scan import scan_file, scan_pickle
from .trust import EXTRA_CONFIG, is_torchscript, read_config_text, refusal

METADATA_KEY = "napari_unetseg.config"
FORMAT_HELP = (
    "napari-unetseg reads .safetensors (its own files and plain state dicts), PyTorch state dicts "
    "(.pt/.pth, including the classic Pytorch-UNet layout), bioimage.io packages (.zip) and, "
    "with trust_code=True, TorchScript archives"
)
#: Keys of checkpoint dictionaries that may wrap the state dict.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
#: The first weight of every Pytorch-UNet-style state dict; used to find (prefixed) state dicts.
FIRST_KEY = "inc.double_conv.0.weight"
SAVE_SUFFIXES = (".safetensors", ".pt", ".pth")


@dataclass
class LoadedWeights:
    """A ready model and the config that says how to use it."""

    model: nn.Module
    config: ModelConfig
    path: Path
    format: str


# --------------------------------------------------------------------------- saving


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def _jsonable(value: Any) -> Any:
    """JSON fallback for numpy scalars, arrays and tensors that may sit in a training summary."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def config_json(config: ModelConfig, indent: int | None = None) -> str:
    return json.dumps(config.to_dict(), indent=indent, sort_keys=True, default=_jsonable)


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _state_with_settings(model: nn.Module, config: ModelConfig) -> OrderedDict[str, torch.Tensor]:
    """A plain state dict that also carries our settings, for ``torch.save``.

    The settings ride in the state dict's ``_metadata`` (where PyTorch keeps module versions):
    ``load_state_dict`` and other tools ignore them, ``torch.load(weights_only=True)`` keeps
    them, and the weights file then describes itself even without its JSON copy.
    """
    state: OrderedDict[str, torch.Tensor] = OrderedDict(_plain_state(model))
    metadata = getattr(model.state_dict(), "_metadata", None) or {}
    root = dict(metadata.get("", {}))
    root[METADATA_KEY] = config_json(config)
    state._metadata = {**metadata, "": root}  # type: ignore[attr-defined]
    return state


def _embedded_config(obj: Any, path: Path) -> ModelConfig | None:
    """Settings that :func:`save_weights` stored inside a ``.pt``/``.pth`` state dict, if any."""
    metadata = getattr(obj, "_metadata", None)
    root = metadata.get("") if isinstance(metadata, Mapping) else None
    text = root.get(METADATA_KEY) if isinstance(root, Mapping) else None
    if not isinstance(text, str):
        return None
    return _config_from_json(text, path)


def _is_our_sidecar(side: Path) -> bool:
    """True when ``side`` holds settings napari-unetseg wrote (so a save may replace it)."""
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and {"in_channels", "encoder_channels"} <= data.keys()


def check_save_target(path: str | os.PathLike[str], probe: bool = True) -> Path:
    """The path a model can be saved to, or a WeightsFileError saying why not.

    With ``probe``, the folder is created if needed and a temporary file written and removed
    there, so that a long training can check its output before it starts.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise WeightsFileError(
            f"cannot save to {path.name}: use a .safetensors name (recommended) or .pt/.pth."
        )
    if path.is_dir():
        raise WeightsFileError(
            f"cannot save to {path}: it is a folder; give a file name inside it."
        )
    side = sidecar_path(path)
    if suffix in (".pt", ".pth") and (
        side.is_dir() or (side.exists() and not _is_our_sidecar(side))
    ):
        raise WeightsFileError(
            f"cannot save to {path.name}: its settings go to {side.name} beside it, and that "
            f"{'is a folder' if side.is_dir() else 'file is not napari-unetseg settings'}, so it "
            f"was left alone. Save as {path.stem}.safetensors (one file) or choose another name."
        )
    if probe:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            create_temporary(path).unlink()
        except OSError as error:
            raise WeightsFileError(
                f"cannot save to {path}: the folder {path.parent} cannot be written "
                f"({error.strerror or error}). Choose a folder you can write to."
            ) from None
    return path


def save_weights(path: str | os.PathLike[str], model: nn.Module, config: ModelConfig) -> Path:
    """Save as native ``.safetensors`` (weights + config) or ``.pt``/``.pth`` plus a JSON beside it.

    The write is atomic: until it has fully succeeded, an existing file of that name is left
    as it was. A ``.pt``/``.pth`` state dict carries its settings inside (see
    :func:`_state_with_settings`); the JSON beside it is a readable copy, written after the
    weights, and never replaces a JSON file that napari-unetseg did not write. Files get the
    permissions of the file they replace, or those the umask gives a new file.
    """
    path = check_save_target(path, probe=False)
    refuse_non_finite_save(model, path)
    suffix = path.suffix.lower()
    side = sidecar_path(path)
    writes: list[tuple[Path, Callable[[Path], None]]] = []
    if isinstance(model, torch.jit.ScriptModule):
        if suffix == ".safetensors":
            raise WeightsFileError(
                f"{path.name}: a TorchScript model can only be saved as .pt or .pth (TorchScript)."
            )
        writes.append((path, lambda tmp: torch.jit.save(model, str(tmp))))
    elif suffix == ".safetensors":
        state = _plain_state(model)
        metadata = {METADATA_KEY: config_json(config), "format": "pt"}
        writes.append((path, lambda tmp: save_file(state, str(tmp), metadata=metadata)))
    else:
        state_with_settings = _state_with_settings(model, config)
        writes.append((path, lambda tmp: torch.save(state_with_settings, str(tmp))))
    if suffix in (".pt", ".pth"):
        text = config_json(config, indent=2)

        def write_sidecar(tmp: Path) -> None:
            tmp.write_text(text, encoding="utf-8")

        writes.append((side, write_sidecar))
    atomic_write_many(writes)
    return path


# --------------------------------------------------------------------------- loading safely


def _refuse(path: Path, names: list[str]) -> UnsafeWeightsError:
    unique = list(dict.fromkeys(names))
    shown = ", ".join(unique[:4]) + (f" and {len(unique) - 4} more" if len(unique) > 4 else "")
    return UnsafeWeightsError(
        f"refused to load {path.name}: it holds Python objects ({shown}) that would run code when "
        "unpickled, so it was not opened. napari-unetseg only loads plain weights; ask for a "
        "state_dict or .safetensors file from a trusted source."
    )


def _damaged(path: Path, detail: str = "") -> WeightsFileError:
    return WeightsFileError(
        f"cannot read {path.name}: the file is damaged, truncated or not a weights file"
        f"{f' ({detail})' if detail else ''}. {FORMAT_HELP}."
    )


def _torch_load(path: Path, is_zip: bool) -> Any:
    """``torch.load`` with ``weights_only=True``, after a scan that refuses code-running pickles."""
    scan = scan_file(path, is_zip)
    if scan.unsafe:
        raise _refuse(path, scan.unsafe)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found:
            raise _refuse(path, [found.group(1)]) from None
        if not scan.complete:
            raise _damaged(path, "its pickled data ends early") from None
        raise _damaged(path, "it uses pickle features that plain weights files do not") from None
    except Exception as error:
        line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        detail = re.split(r"(?<=\.)\s", line)[0].rstrip(".")[:160]
        raise _damaged(path, detail) from None


# --------------------------------------------------------------------------- reading


def _safetensors_header(head: bytes, size: int) -> str | None:
    """``"ok"``, ``"truncated"`` (header longer than the file) or None (not safetensors)."""
    if len(head) < 10 or head[8:9] != b"{":
        return None
    header_length = int.from_bytes(head[:8], "little")
    if header_length < 2 or header_length > 100_000_000:
        return None
    return "ok" if header_length <= size - 8 else "truncated"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as error:
        raise WeightsFileError(
            f"cannot read {path.name}: it is a .safetensors file but damaged or truncated "
            f"({error}). Save or download it again. {FORMAT_HELP}."
        ) from None
    return tensors, metadata


def _is_torchscript(path: Path) -> bool:
    return is_torchscript(path)


def _is_bioimageio(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n in ("rdf.yaml", "bioimageio.yaml") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def _tensors_of(obj: Mapping[Any, Any]) -> dict[str, torch.Tensor]:
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrappers' key prefixes (``module.``, ``_orig_mod.``, ``model.``, ...)."""
    state = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}
    if FIRST_KEY in state:
        return state
    prefixes = [k[: -len(FIRST_KEY)] for k in state if k.endswith("." + FIRST_KEY)]
    if len(prefixes) == 1:
        prefix = prefixes[0]
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        candidates: list[Mapping[Any, Any]] = []
        for key in CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                candidates.append(inner)
        candidates.append(obj)
        candidates += [
            v for k, v in obj.items() if isinstance(v, Mapping) and k not in CHECKPOINT_KEYS
        ]
        states = [_strip_prefix(_tensors_of(c)) for c in candidates]
        for state in states:
            if FIRST_KEY in state:
                return state
        for state in states:
            if state:
                return state
    raise WeightsFileError(
        f"{path.name} holds no tensors napari-unetseg recognises (found {type(obj).__name__}). "
        f"{FORMAT_HELP}."
    )


def _width(state: Mapping[str, torch.Tensor], key: str, dim: int) -> int:
    tensor = state[key]
    if tensor.ndim != 4:
        raise ValueError(f"'{key}' has shape {tuple(tensor.shape)}, not that of a 2-D convolution")
    return int(tensor.shape[dim])


def infer_config(state: Mapping[str, torch.Tensor], path: Path | None = None) -> ModelConfig:
    """Rebuild the layout of a Pytorch-UNet-style state dict from its tensor shapes."""
    name = path.name if path else "the state dict"
    if FIRST_KEY not in state:
        raise WeightsFileError(
            f"{name} is not a U-Net in the Pytorch-UNet layout (no '{FIRST_KEY}'; its first keys "
            f"are {list(state)[:4]}). {FORMAT_HELP}."
        )
    depth = 0
    while f"down{depth + 1}.maxpool_conv.1.double_conv.0.weight" in state:
        depth += 1
    if (
        depth == 0
        or f"up{depth}.conv.double_conv.0.weight" not in state
        or "outc.conv.weight" not in state
    ):
        raise WeightsFileError(
            f"{name}: the U-Net layout is incomplete (down/up/outc blocks missing). {FORMAT_HELP}."
        )
    try:
        encoder = [_width(state, FIRST_KEY, 0)]
        encoder += [
            _width(state, f"down{i}.maxpool_conv.1.double_conv.3.weight", 0)
            for i in range(1, depth + 1)
        ]
        decoder = [
            _width(state, f"up{i}.conv.double_conv.3.weight", 0) for i in range(1, depth + 1)
        ]
        mids = [_width(state, f"up{i}.conv.double_conv.0.weight", 0) for i in range(1, depth + 1)]
        return ModelConfig(
            in_channels=_width(state, FIRST_KEY, 1),
            n_classes=_width(state, "outc.conv.weight", 0),
            encoder_channels=tuple(encoder),
            decoder_channels=tuple(decoder),
            decoder_mid_channels=tuple(mids),
            upsampling="transposed" if "up1.up.weight" in state else "bilinear",
            conv_bias="inc.double_conv.0.bias" in state,
            # The classic project's preprocessing: uint8 scaled to [0, 1].
            normalization=NormalizationConfig(method="classic"),
            origin="pytorch-unet",
        )
    except (KeyError, ValueError, IndexError) as error:
        raise WeightsFileError(
            f"{name} looks like a Pytorch-UNet state dict but its tensors do not fit that layout "
            f"({error}). {FORMAT_HELP}."
        ) from None


def _check_shapes(state: Mapping[str, torch.Tensor], config: ModelConfig, path: Path) -> None:
    """Compare the file's tensors with the layout its settings claim, before allocating it.

    The layout is built on the ``meta`` device (shapes only), so settings claiming a huge
    network in a small file cost nothing to refuse.
    """
    try:
        with torch.device("meta"):
            skeleton = UNet(config)
    except (UnetSegError, ValueError, RuntimeError) as error:
        raise WeightsFileError(
            f"{path.name}: its settings do not describe a U-Net ({error})."
        ) from None
    expected = {
        k: tuple(v.shape)
        for k, v in skeleton.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    problems = [f"'{k}' is missing" for k in expected if k not in state]
    problems += [
        f"'{k}' has shape {tuple(state[k].shape)}, the settings say {shape}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    problems += [
        f"'{k}' is not part of that layout"
        for k in state
        if k not in expected and not k.endswith("num_batches_tracked")
    ]
    if problems:
        more = f" and {len(problems) - 2} more" if len(problems) > 2 else ""
        raise WeightsFileError(
            f"{path.name}: the weights do not fit the U-Net layout they appear to have "
            f"({'; '.join(problems[:2])}{more}). {FORMAT_HELP}."
        )


def build_model(state: Mapping[str, torch.Tensor], config: ModelConfig, path: Path) -> UNet:
    _check_shapes(state, config, path)
    try:
        model = UNet(config)
    except (UnetSegError, ValueError, RuntimeError) as error:
        raise WeightsFileError(
            f"{path.name}: its settings do not describe a U-Net ({error})."
        ) from None
    state = dict(state)
    # Batch-norm step counters do not change predictions; some converters drop them.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1:3]
        raise WeightsFileError(
            f"{path.name}: the weights do not fit the U-Net layout they appear to have "
            f"({' '.join(s.strip() for s in first)}). {FORMAT_HELP}."
        ) from None
    check_finite_weights(model, path)
    model.eval()
    return model


def first_non_finite(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding NaN or infinity, or None."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def check_finite_weights(model: nn.Module, path: Path) -> None:
    """Refuse weights holding NaN or infinity: every prediction from them would be garbage."""
    name = first_non_finite(model)
    if name is not None:
        raise WeightsFileError(
            f"{path.name}: its weights hold NaN or infinite values (first in '{name}'), "
            "so every prediction would be meaningless; the training that wrote it probably "
            "diverged. Use an earlier weights file, or train again with a lower learning rate."
        )


def refuse_non_finite_save(model: nn.Module, path: Path) -> None:
    """Write no file that could never be loaded: weights holding NaN or infinity."""
    name = first_non_finite(model)
    if name is not None:
        raise WeightsFileError(
            f"{path.name} was not written: the weights hold NaN or infinite values (first in "
            f"'{name}'), so no prediction from them would mean anything; the training that "
            "made them diverged. Train again (a lower learning rate helps), or load an earlier "
            "weights file."
        )


def _read_sidecar(path: Path) -> ModelConfig | None:
    """Our settings from the JSON beside ``path``; None when there is none or it is not ours."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None  # not our JSON (ours is always valid); someone else's notes
    if not isinstance(data, dict) or not {"in_channels", "encoder_channels"} <= data.keys():
        return None
    try:
        return ModelConfig.from_dict(data)
    except (ValueError, TypeError, RecursionError) as error:
        raise WeightsFileError(
            f"{side.name} (the settings beside {path.name}) cannot be used: {error} "
            f"Move {side.name} away to load {path.name} with its layout inferred."
        ) from None


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
            f"({type(error).__name__}). Export it from a model that takes (N, C, H, W) images."
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[-2:] != (64, 64):
        raise WeightsFileError(
            f"{path.name}: the TorchScript model does not return (N, C, H, W) logits of the "
            "image's size, so it cannot be used for segmentation."
        )
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


def _load_torchscript(path: Path) -> LoadedWeights:
    """Load a TorchScript archive: this runs its code, so callers ask for consent first."""
    extra = {EXTRA_CONFIG: ""}
    try:
        scripted = torch.jit.load(  # type: ignore[no-untyped-call]
            str(path), map_location="cpu", _extra_files=extra
        )
    except Exception as error:
        raise WeightsFileError(
            f"cannot read {path.name}: it looks like a TorchScript archive but is damaged or "
            f"incomplete ({type(error).__name__}). {FORMAT_HELP}."
        ) from None
    scripted.eval()
    check_finite_weights(scripted, path)
    stored = read_config_text(extra[EXTRA_CONFIG], path.name) if extra[EXTRA_CONFIG] else None
    config = stored or _read_sidecar(path) or _torchscript_config(scripted, path)
    return LoadedWeights(scripted, config.replace(origin="torchscript"), path, "torchscript")


def _load_safetensors(path: Path) -> LoadedWeights:
    tensors, metadata = _read_safetensors(path)
    if METADATA_KEY in metadata:
        config = _config_from_json(metadata[METADATA_KEY], path)
        return LoadedWeights(build_model(tensors, config, path), config, path, "native")
    state = _unwrap_state_dict(tensors, path)
    config = infer_config(state, path)
    return LoadedWeights(build_model(state, config, path), config, path, "safetensors")


def _config_from_json(text: str, path: Path) -> ModelConfig:
    """Settings stored inside a weights file, or a :class:`WeightsFileError` that says why not."""
    try:
        return ModelConfig.from_json(text)
    except (ValueError, TypeError, RecursionError) as error:
        raise WeightsFileError(
            f"{path.name}: its stored settings are invalid ({error}). {FORMAT_HELP}."
        ) from None


def _looks_like_pickle(head: bytes) -> bool:
    """Protocol 2+ starts with PROTO; protocol 0/1 pickles of objects start with these opcodes."""
    return head[:1] == b"\x80" or head[:1] in (b"c", b"(", b"}", b"]", b"i")


def load_weights(path: str | os.PathLike[str], *, trust_code: bool = False) -> LoadedWeights:
    """Read any supported weights file into a model on the CPU, with its config.

    A file that holds code (TorchScript, or a bioimage.io package whose only usable weights are
    TorchScript) is refused unless ``trust_code`` is True; then nothing of it is run or loaded.

    Raises
    ------
    WeightsFileError
        The file is missing, empty, damaged, of a format not listed above, or its tensors do
        not form a U-Net. The message names the file and the formats expected.
    UnsafeWeightsError
        The file holds pickled Python objects that would run code when loaded; it is refused
        without being unpickled.
    TrustRequiredError
        The file holds TorchScript code and ``trust_code`` is False.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsFileError(
            f"no weights file at {path}; check the name and folder. {FORMAT_HELP}."
        )
    if path.is_dir():
        raise WeightsFileError(
            f"{path} is a folder; choose a weights file inside it. {FORMAT_HELP}."
        )
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as error:
        raise WeightsFileError(f"cannot open {path}: {error.strerror or error}.") from None
    if size == 0:
        raise WeightsFileError(f"{path.name} is empty (0 bytes). {FORMAT_HELP}.")

    safetensors_header = _safetensors_header(head, size)
    if safetensors_header == "truncated":
        raise WeightsFileError(
            f"cannot read {path.name}: it is a .safetensors file cut short ({size} bytes, less "
            f"than its own header announces). Save or download it again. {FORMAT_HELP}."
        )
    if safetensors_header == "ok":
        return _load_safetensors(path)

    is_zip = head.startswith(b"PK\x03\x04")
    if is_zip and _is_bioimageio(path):
        from .bioimageio import load_package

        loaded: LoadedWeights = load_package(path, trust_code=trust_code)
        return loaded
    if is_zip and _is_torchscript(path):
        if not trust_code:
            raise refusal(path)
        return _load_torchscript(path)
    if not (is_zip or _looks_like_pickle(head)):
        raise WeightsFileError(
            f"{path.name} is not a weights file napari-unetseg knows. {FORMAT_HELP}."
        )
    if not is_zip and head[:1] != b"\x80":
        # An old-protocol pickle: never a torch weights file, but say so loudly if it runs code.
        with open(path, "rb") as stream:
            scan = scan_pickle(stream)
        if scan.unsafe:
            raise _refuse(path, scan.unsafe)
        raise WeightsFileError(
            f"{path.name} is not a weights file napari-unetseg knows. {FORMAT_HELP}."
        )
    loaded = _torch_load(path, is_zip)
    state = _unwrap_state_dict(loaded, path)
    embedded = _embedded_config(loaded, path)
    if embedded is not None:
        # Saved by us: the settings inside win over a JSON beside it, which may be older.
        return LoadedWeights(build_model(state, embedded, path), embedded, path, "state_dict")
    sidecar = _read_sidecar(path)
    if sidecar is None:
        config = infer_config(state, path)
        return LoadedWeights(build_model(state, config, path), config, path, "state_dict")
    try:
        model = build_model(state, sidecar, path)
    except WeightsFileError as error:
        side = sidecar_path(path).name
        raise WeightsFileError(
            f"{error} The settings come from {side} beside it, which may belong to other "
            f"weights: move {side} away to load {path.name} with its layout inferred."
        ) from None
    return LoadedWeights(model, sidecar, path, "state_dict")
