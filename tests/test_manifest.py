"""The npe2 manifest is valid, and napari finds the plugin from a built wheel too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_validates_with_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    manifest.validate_imports()
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["U-Net Segmentation"]
    assert [s.key for s in contributions.sample_data] == ["nuclei"]
    assert "napari/layers/context" in contributions.menus


def test_npe2_validate_command():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-unetseg"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_editable_install_finds_the_manifest():
    from npe2 import PluginManager

    manager = PluginManager()
    manager.discover()
    manifest = manager.get_manifest("napari-unetseg")
    assert [w.display_name for w in manifest.contributions.widgets] == ["U-Net Segmentation"]


DISCOVER = textwrap.dedent(
    """
    import json, sys
    from importlib import metadata, resources
    from npe2 import PluginManager

    import napari_unetseg

    manager = PluginManager()
    manager.discover()
    manifest = manager.get_manifest("napari-unetseg")
    (entry,) = [
        e for e in metadata.distribution("napari-unetseg").entry_points
        if e.group == "napari.manifest"
    ]
    module, _, name = entry.value.partition(":")
    print(json.dumps({
        "package": napari_unetseg.__file__,
        "manifest": str(resources.files(module) / name),
        "widgets": [w.display_name for w in manifest.contributions.widgets],
        "samples": [s.key for s in manifest.contributions.sample_data],
    }))
    """
)


def test_napari_discovers_the_plugin_from_a_built_wheel(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("hatchling")
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(dist),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = dist.glob("napari_unetseg-*.whl")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert names.count("napari_unetseg/napari.yaml") == 1
        archive.extractall(unpacked)
    packaged = unpacked / "napari_unetseg" / "napari.yaml"
    assert not packaged.is_symlink()
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()

    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    found = subprocess.run(
        [sys.executable, "-c", DISCOVER], capture_output=True, text=True, env=env, timeout=120
    )
    assert found.returncode == 0, found.stderr[-3000:]
    seen = json.loads(found.stdout.strip().splitlines()[-1])
    assert Path(seen["package"]).is_relative_to(unpacked)
    assert Path(seen["manifest"]).resolve().is_relative_to(unpacked.resolve())
    assert seen["widgets"] == ["U-Net Segmentation"]
    assert seen["samples"] == ["nuclei"]
