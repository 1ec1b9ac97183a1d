"""dvc.yaml's code deps of each stage: its script, src/chunktrain/__init__.py and the packages (or modules) of
chunktrain that the script imports, transitively; and src/models, the user's own model builders, for the stages
that build a model (core/model.py imports them by name at run time). Nothing it imports is left out (an edit to it
would not rerun the stage), and nothing listed goes unimported (an edit to it would rerun the stage for nothing)."""

import ast
import importlib
import sys
from pathlib import Path

import pytest
import yaml

from chunktrain.testing import ROOT

SRC = ROOT / "src"
# Files that import a module named at run time, which no import statement shows, and the folder (under src/) whose
# modules they may import: core/model.py's builder() imports model.arch's models.<module>.
DYNAMIC = {"chunktrain/core/model.py": "models"}
STAGES = {name: stage.get("do", stage)  # a foreach stage: its template
          for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}


def module_file(name: str) -> Path | None:
    """The file under src/ that `import name` runs, or None for a module from elsewhere."""
    path = SRC.joinpath(*name.split("."))
    return next((file for file in (path.with_suffix(".py"), path / "__init__.py") if file.is_file()), None)


def imported_names(node: ast.AST, path: Path) -> list[str]:
    """The modules an import statement may load (for `from a import b`, a and a.b), named absolutely."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the file's package, up level - 1 packages
        package = path.relative_to(SRC).parent.parts[:len(path.relative_to(SRC).parent.parts) - node.level + 1]
        base = ".".join([*package, *([base] if base else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def imported_files(script: Path) -> set[Path]:
    """The files under src/ that running `script` imports, at module level or in a function, transitively; with
    the __init__.py of every package on the way, which Python runs first, and every module of a DYNAMIC folder."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.relative_to(SRC).as_posix() in DYNAMIC:
            todo += sorted((SRC / DYNAMIC[path.relative_to(SRC).as_posix()]).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in imported_names(node, path):
                parts = name.split(".")
                todo += filter(None, (module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)))
    return seen


def script_of(stage: dict) -> str:
    (script,) = [word for word in stage["cmd"].split() if word.startswith("src/") and word.endswith(".py")]
    return script


def code_deps(stage: dict) -> set[str]:
    return {dep for dep in stage["deps"] if dep.startswith("src/")}


def covers(dep: str, file: str) -> bool:
    return file == dep or file.startswith(f"{dep}/")


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_depends_on_exactly_the_packages_its_script_imports(name):
    stage = STAGES[name]
    script, deps = script_of(stage), code_deps(stage)
    imported = {path.relative_to(ROOT).as_posix() for path in imported_files(ROOT / script)}
    assert {script, "src/chunktrain/__init__.py"} <= deps
    for dep in deps - {script}:  # a module or a subpackage of chunktrain (never chunktrain as a whole), or src/models
        assert (ROOT / dep).exists(), dep
        assert Path(dep).parent == Path("src/chunktrain") or dep in {f"src/{d}" for d in DYNAMIC.values()}, dep
    assert sorted(file for file in imported if not any(covers(dep, file) for dep in deps)) == [], \
        f"{name} imports code that dvc.yaml does not list: an edit to it would not rerun the stage"
    assert sorted(dep for dep in deps if not any(covers(dep, file) for file in imported)) == [], \
        f"{name} lists code that it does not import: an edit to it would rerun the stage for nothing"


def test_every_import_of_a_module_named_at_run_time_is_in_dynamic():
    """The walk cannot see importlib.import_module(name) or __import__(name): DYNAMIC must list each file that does."""
    def imports_by_name(path: Path) -> bool:
        return any(isinstance(node, ast.Attribute) and node.attr == "import_module"
                   or isinstance(node, ast.Name) and node.id == "__import__"
                   for node in ast.walk(ast.parse(path.read_text())))

    assert {path.relative_to(SRC).as_posix() for path in SRC.rglob("*.py") if imports_by_name(path)} == set(DYNAMIC)


@pytest.mark.parametrize("stage, script", [("init", "init"), ("train", "train")])
def test_the_code_id_in_a_checkpoints_lineage_covers_its_stages_code_deps(stage, script):
    assert {f"src/{part}" for part in importlib.import_module(script).CODE} == code_deps(STAGES[stage])


def test_the_import_walk_follows_imports_in_functions_and_from_packages(tmp_path, monkeypatch):
    """The walk itself: a test of the test, on a tiny src/."""
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "DYNAMIC", {"pkg/c.py": "plugins"})
    for folder in ("pkg/sub", "plugins/deep"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "main.py").write_text("import json\nfrom pkg import a\n\ndef later():\n    from pkg.sub import b\n")
    for name, text in [("pkg/__init__.py", ""), ("pkg/a.py", "from . import c\n"), ("pkg/c.py", ""),
                       ("pkg/unused.py", ""), ("pkg/sub/__init__.py", ""), ("pkg/sub/b.py", ""),
                       ("plugins/net.py", "from pkg import d\n"), ("pkg/d.py", ""), ("plugins/deep/more.py", ""),
                       ("plugins/notes.txt", "")]:
        (tmp_path / name).write_text(text)
    assert sorted(path.relative_to(tmp_path).as_posix() for path in imported_files(tmp_path / "main.py")) == [
        "main.py", "pkg/__init__.py", "pkg/a.py", "pkg/c.py", "pkg/d.py", "pkg/sub/__init__.py", "pkg/sub/b.py",
        "plugins/deep/more.py", "plugins/net.py"]
