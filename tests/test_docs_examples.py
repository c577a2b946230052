"""The Python examples in README and docs/ run as written (with shorter training budgets)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/scripting.md"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == [
        "bash scripts/demo.sh",
        "bash scripts/test.sh",
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in ci


@pytest.mark.parametrize("document", DOCUMENTS)
def test_python_examples_run(document, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = "\n".join(python_blocks(ROOT / document))
    assert code, f"{document} has no python example"
    code = re.sub(r"max_seconds=\d+", "max_seconds=1", code)
    code = code.replace("nuclei_scene()", "nuclei_scene((96, 96))")
    exec(compile(code, document, "exec"), {"__name__": "__docs__"})
