"""The core never imports Qt, napari, magicgui or superqt; the package root imports nothing heavy."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUI_PACKAGES = {
    "napari",
    "magicgui",
    "superqt",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "pyqtgraph",
}


def loaded_top_level_modules(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_imports_no_gui_package_in_a_fresh_interpreter():
    loaded = loaded_top_level_modules(
        "import napari_unetseg.core\n"
        "from napari_unetseg.core import Segmenter\n"
        "import napari_unetseg.core.synthetic, napari_unetseg.core.metrics, napari_unetseg.core.weights"
    )
    assert "torch" in loaded  # sanity: the probe really imported the core
    assert not (loaded & GUI_PACKAGES)


def test_package_root_loads_neither_torch_nor_qt():
    loaded = loaded_top_level_modules("import napari_unetseg")
    assert not (loaded & (GUI_PACKAGES | {"torch"}))


def test_import_linter_contract_holds():
    lint = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which(
        "lint-imports"
    )
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[testing]')")
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout


def test_sample_data_and_settings_load_without_torch():
    loaded = loaded_top_level_modules(
        "import napari_unetseg.core.synthetic, napari_unetseg.core.config, napari_unetseg.core.errors"
    )
    assert "torch" not in loaded


def test_every_lazy_core_export_resolves():
    import napari_unetseg.core as core

    assert sorted(core.__all__) == sorted(core._EXPORTS)
    for name in core.__all__:
        assert getattr(core, name) is not None
