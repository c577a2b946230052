"""Files that carry code (TorchScript): recognising them and reading what they hold without running them.

A TorchScript archive is a program: ``torch.jit.load`` compiles its ``code/`` folder and may run
its ``__setstate__`` methods, and every forward pass runs its ``forward``. Such a file may read
or write any file the user can. So it is loaded only with the user's consent
(``trust_code=True``, ``--trust-code``, or the widget's dialog); without it, only the zip's
entry list and plain JSON are read here, and no pickle is unpickled.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .config import ModelConfig
from .errors import TrustRequiredError

#: Name of our settings inside a TorchScript archive (``torch.jit.save(_extra_files=...)``).
EXTRA_CONFIG = "napari_unetseg.config.json"
TRUST_HINT = (
    "Load it only if you trust its source: Segmenter.load(path, trust_code=True) in Python, "
    "--trust-code on the command line, or confirm the question when loading it in the widget"
)
CONSENT_QUESTION = (
    "{name} contains code (TorchScript) that runs when the model is loaded and used; it can "
    "read, change or delete your files. Load it only if you trust its source."
)


def torchscript_members(names: list[str]) -> bool:
    """True when a zip's entry names are those of a TorchScript archive."""
    return any("/code/" in name or name.endswith("constants.pkl") for name in names)


def is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return torchscript_members(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def refusal(path: Path, what: str = "a TorchScript archive") -> TrustRequiredError:
    return TrustRequiredError(
        f"{path.name} is {what}: it contains code that would run when loaded, so it was not "
        f"loaded and nothing of it ran. {TRUST_HINT}."
    )


@dataclass
class TorchScriptInfo:
    """What a TorchScript archive holds, read from its zip entries only."""

    path: Path
    code_files: list[str] = field(default_factory=list)
    tensor_files: int = 0
    tensor_bytes: int = 0
    config: ModelConfig | None = None
    config_source: str = ""
    problem: str = ""

    def describe(self) -> str:
        lines = [
            f"TorchScript archive {self.path.name}: it contains code, which was neither loaded "
            "nor run",
            f"code files: {', '.join(self.code_files[:6]) or 'none'}"
            + (f" and {len(self.code_files) - 6} more" if len(self.code_files) > 6 else ""),
            f"stored tensors: {self.tensor_files} ({self.tensor_bytes / 1e6:.2f} MB)",
        ]
        if self.config is not None:
            c = self.config
            lines += [
                f"settings ({self.config_source}): input channels {c.in_channels}, classes "
                f"{', '.join(c.names)}, task {c.task}, normalisation {c.normalization.method}",
            ]
        else:
            lines.append("settings: none stored; they are probed when the model is loaded")
        if self.problem:
            lines.append(f"note: {self.problem}")
        lines.append(f"{TRUST_HINT}.")
        return "\n".join(lines)


def read_config_text(text: str | bytes, where: str) -> ModelConfig:
    from .errors import WeightsFileError

    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return ModelConfig.from_dict(data)
    except (ValueError, TypeError) as error:
        raise WeightsFileError(f"{where}: its stored settings are invalid ({error}).") from None


def torchscript_info(path: Path, sidecar: ModelConfig | None = None) -> TorchScriptInfo:
    """List a TorchScript archive's code and tensors and read our settings, running nothing."""
    info = TorchScriptInfo(path)
    try:
        with zipfile.ZipFile(path) as archive:
            for item in archive.infolist():
                parts = item.filename.split("/")
                inner = "/".join(parts[1:])
                if inner.startswith("code/") and inner.endswith(".py"):
                    info.code_files.append(inner)
                elif inner.startswith("data/") and not item.is_dir():
                    info.tensor_files += 1
                    info.tensor_bytes += item.file_size
                elif inner == f"extra/{EXTRA_CONFIG}":
                    try:
                        info.config = read_config_text(archive.read(item), path.name)
                        info.config_source = "stored in the archive"
                    except ValueError as error:
                        info.problem = str(error)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        info.problem = f"the archive cannot be read ({type(error).__name__})"
    if info.config is None and sidecar is not None:
        info.config, info.config_source = sidecar, "from the JSON file beside it"
    return info


def requires_trust(path: str | Path) -> bool:
    """True when loading ``path`` would run code from it, so the user must consent first."""
    path = Path(path).expanduser()
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return False
    if is_torchscript(path):
        return True
    with zipfile.ZipFile(path) as archive:
        package = any(n in ("rdf.yaml", "bioimageio.yaml") for n in archive.namelist())
    if package:
        from .bioimageio import requires_trust as package_requires_trust

        return package_requires_trust(path)
    return False


def describe_untrusted(path: str | Path) -> str | None:
    """What a code-bearing file holds, read without running it; None for other files."""
    from .weights import _read_sidecar

    path = Path(path).expanduser()
    if not (path.is_file() and zipfile.is_zipfile(path) and is_torchscript(path)):
        return None
    return torchscript_info(path, _read_sidecar(path)).describe()
