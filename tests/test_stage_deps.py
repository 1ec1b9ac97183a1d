"""dvc.yaml lists, for each stage, exactly the files under src/ that its script imports, transitively."""

import ast
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

SRC = ROOT / "src"


def imported_files(script: Path) -> set[Path]:
    """The script and every module under src/ it imports, directly or through another such module."""
    found, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                # a package import runs its __init__.py too
                candidates = [SRC.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
                candidates.append(SRC.joinpath(*parts).with_suffix(".py"))
                todo += [candidate for candidate in candidates if candidate.is_file()]
    return found


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", list(stages()))
def test_a_stage_depends_on_exactly_the_code_it_imports(name):
    stage = stages()[name]
    stage = stage.get("do", stage)
    script = next(word for word in stage["cmd"].split() if word.startswith("src/") and word.endswith(".py"))
    declared = {dep for dep in stage["deps"] if dep.startswith("src/")}
    imported = {str(path.relative_to(ROOT)) for path in imported_files(ROOT / script)}
    assert sorted(declared - imported) == [], f"{name} lists code it does not import"
    assert sorted(imported - declared) == [], f"{name} imports code dvc.yaml does not list: edits would not rerun it"
