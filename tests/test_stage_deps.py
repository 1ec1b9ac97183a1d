"""dvc.yaml's code deps of each stage: the code that can change its outputs.

A train stage depends on the recipe (src/chunktrain/recipe), which imports nothing of chunktrain outside it, and
src/models, the user's own model builders (recipe/model.py imports them by name at run time); its command,
src/train.py, and the runner it starts decide how the chunk runs, never its bytes, so no stage depends on them.
Every other stage depends on its script and the packages (or modules) of chunktrain that the script imports,
transitively. Nothing imported is left out (an edit to it would not rerun the stage), and nothing listed goes
unimported (an edit to it would rerun the stage for nothing)."""

import ast
import importlib
import sys
from pathlib import Path

import pytest
import yaml

from chunktrain.testing import ROOT

SRC = ROOT / "src"
# Files that import a module named at run time, which no import statement shows, and the folder (under src/) whose
# modules they may import: recipe/model.py's builder() imports model.arch's models.<module>.
DYNAMIC = {"chunktrain/recipe/model.py": "models"}
RECIPE, MODELS = "src/chunktrain/recipe", "src/models"
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


def holds_no_code(path: str) -> bool:
    """A package's __init__.py that holds a docstring alone: running it cannot change an output."""
    tree = ast.parse((ROOT / path).read_text())
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in tree.body)


def check_deps(name: str, deps: set[str], imported: set[str]) -> None:
    imported = {file for file in imported if not (file.endswith("/__init__.py") and holds_no_code(file)
                                                 and not any(covers(dep, file) for dep in deps))}
    for dep in deps:  # a module or a subpackage of chunktrain (never chunktrain as a whole), or src/models
        assert (ROOT / dep).exists(), dep
        assert Path(dep).parent.parent == Path("src/chunktrain") or dep == MODELS \
            or Path(dep).parent in (Path("src"), Path("src/chunktrain")), dep
    assert sorted(file for file in imported if not any(covers(dep, file) for dep in deps)) == [], \
        f"{name} imports code that dvc.yaml does not list: an edit to it would not rerun the stage"
    assert sorted(dep for dep in deps if not any(covers(dep, file) for file in imported)) == [], \
        f"{name} lists code that it does not import: an edit to it would rerun the stage for nothing"


@pytest.mark.parametrize("name", [name for name in STAGES if name != "train"])
def test_a_stage_depends_on_exactly_the_packages_its_script_imports(name):
    stage = STAGES[name]
    script, deps = script_of(stage), code_deps(stage)
    assert script in deps
    check_deps(name, deps, {path.relative_to(ROOT).as_posix() for path in imported_files(ROOT / script)})


def test_a_chunk_depends_on_the_recipe_alone_which_imports_nothing_outside_it():
    deps = code_deps(STAGES["train"])
    assert deps == {RECIPE, MODELS}
    imported = set()
    for module in (ROOT / RECIPE).rglob("*.py"):
        imported |= {path.relative_to(ROOT).as_posix() for path in imported_files(module)}
    check_deps("train", deps, imported)
    assert holds_no_code("src/chunktrain/__init__.py")


def test_no_stage_depends_on_the_runner_but_plan_on_the_settings_it_validates():
    runner = {file.relative_to(ROOT).as_posix() for file in (SRC / "chunktrain/runner").rglob("*.py")}
    depending = {(name, file) for name, stage in STAGES.items() for dep in code_deps(stage) for file in runner
                 if covers(dep, file)}
    assert depending == {("plan", "src/chunktrain/runner/settings.py")}
    assert "src/train.py" not in code_deps(STAGES["train"])


def test_every_import_of_a_module_named_at_run_time_is_in_dynamic():
    """The walk cannot see importlib.import_module(name) or __import__(name): DYNAMIC must list each file that does."""
    def imports_by_name(path: Path) -> bool:
        return any(isinstance(node, ast.Attribute) and node.attr == "import_module"
                   or isinstance(node, ast.Name) and node.id == "__import__"
                   for node in ast.walk(ast.parse(path.read_text())))

    named = {path.relative_to(SRC).as_posix() for path in SRC.rglob("*.py") if imports_by_name(path)}
    assert named - {"chunktrain/testing.py"} == set(DYNAMIC)  # testing.py, no stage's, loads stage scripts by name


@pytest.mark.parametrize("stage, module", [("init", "init"), ("train", "chunktrain.recipe.chunk")])
def test_the_code_id_in_a_checkpoints_lineage_covers_its_stages_code_deps(stage, module):
    assert {f"src/{part}" for part in importlib.import_module(module).CODE} == code_deps(STAGES[stage])


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
