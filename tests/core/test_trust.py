"""TorchScript holds code: without the user's consent nothing of it runs, not even at ``info``.

The hostile archives below do what the issue measured: one maps a file with
``torch.from_file(path, shared=True)`` and overwrites it, one does so from ``__setstate__``
(which ``torch.jit.load`` itself runs), one loops for ever. Each test also shows, with consent,
that the archive really does what it threatens, so the refusal is what keeps the file intact.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from napari_unetseg.__main__ import main
from napari_unetseg.core import Segmenter
from napari_unetseg.core.errors import TrustRequiredError, UnsafeWeightsError, WeightsFileError
from napari_unetseg.core.trust import describe_untrusted, requires_trust
from napari_unetseg.core.weights import load_weights

ORIGINAL = b"precious"  # 8 bytes: the size the archives map


class WritesInForward(nn.Module):
    """A plausible segmentation model whose forward overwrites ``target``."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mapped = torch.from_file(self.target, True, 8, dtype=torch.uint8)
        # The result is used, so TorchScript cannot drop the write as dead code.
        return self.conv(x) + mapped.fill_(88).sum().float() * 0


class WritesWhenLoaded(nn.Module):
    """Overwrites ``target`` from ``__setstate__``, which ``torch.jit.load`` runs."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        mapped = torch.from_file(self.target, True, 8, dtype=torch.uint8)
        # Used in a field, so TorchScript cannot drop the write as dead code.
        self.training = bool(mapped.fill_(89).sum() >= 0) and state[1]


class LoopsForever(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        while bool(y.sum() > -1.0):
            y = y * 1.0
        return self.conv(y)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.bin"
    victim.write_bytes(ORIGINAL)
    return victim


def _save(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("hostile", [WritesInForward, WritesWhenLoaded], ids=["forward", "load"])
def test_hostile_archive_is_refused_and_runs_nothing(tmp_path: Path, hostile: type) -> None:
    victim = _victim(tmp_path)
    archive = _save(hostile(str(victim)), tmp_path / "model.pt")
    assert victim.read_bytes() == ORIGINAL  # saving did not run it either

    assert requires_trust(archive)
    with pytest.raises(TrustRequiredError, match=r"contains code.*trust_code=True"):
        Segmenter.load(archive)
    with pytest.raises(UnsafeWeightsError):  # callers that catch the older error still refuse
        load_weights(archive)
    summary = describe_untrusted(archive)
    assert summary is not None and "neither loaded nor run" in summary
    assert main(["info", str(archive)]) == 0
    assert main(["segment", str(archive), str(tmp_path / "image.npy")]) == 1
    assert victim.read_bytes() == ORIGINAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "victim.bin"]

    # With consent its code runs, and does what it threatened.
    if hostile is WritesInForward:
        assert Segmenter.load(archive, device="cpu", trust_code=True).config.origin == "torchscript"
    else:
        with pytest.raises(WeightsFileError, match="no convolution"):  # not a U-Net, but it ran
            Segmenter.load(archive, device="cpu", trust_code=True)
    assert victim.read_bytes() != ORIGINAL


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_endless_archive_is_refused_without_running(tmp_path: Path) -> None:
    archive = _save(LoopsForever(), tmp_path / "endless.pt")
    # In a child process, so that a regression fails here instead of hanging the suite.
    code = (
        "import sys\n"
        "from napari_unetseg.core import Segmenter, TrustRequiredError\n"
        "try:\n"
        f"    Segmenter.load({str(archive)!r})\n"
        "except TrustRequiredError as error:\n"
        "    print('refused:', error)\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    info = [sys.executable, "-m", "napari_unetseg", "info", str(archive)]
    loaded, described = (
        subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
        for command in ([sys.executable, "-c", code], info)
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "refused: endless.pt is a TorchScript archive" in loaded.stdout
    assert described.returncode == 0, described.stderr
    assert "neither loaded nor run" in described.stdout


def test_plain_weights_need_no_consent(tmp_path: Path) -> None:
    seg = Segmenter.create(base_width=4, depth=2, device="cpu")
    path = seg.save(tmp_path / "plain.safetensors")
    assert not requires_trust(path)
    assert describe_untrusted(path) is None
    assert Segmenter.load(path, device="cpu").config == seg.config
