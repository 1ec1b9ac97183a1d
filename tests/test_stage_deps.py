"""dvc.yaml lists, for each stage, exactly the files under src/ that its script imports, transitively: as deps,
or through the code digest it depends on (data/code/train.sha256 stands for the files of src/train.py)."""

import pytest
import yaml

from chunktrain.stage_inputs import code_digest, imported_files
from chunktrain.testing import ROOT

DIGESTS = {"data/code/train.sha256": "src/train.py"}  # digest file: the script whose code it covers


def stages() -> dict[str, dict]:
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in declared.items()}


def code_of(script: str) -> set[str]:
    return {str(path.relative_to(ROOT)) for path in imported_files(ROOT / script)}


@pytest.mark.parametrize("name", list(stages()))
def test_a_stage_depends_on_exactly_the_code_it_imports(name):
    stage = stages()[name]
    scripts = [word for word in stage["cmd"].split() if word.startswith("src/") and word.endswith(".py")]
    declared = {dep for dep in stage["deps"] if dep.startswith("src/")}
    declared |= {file for dep in stage["deps"] if dep in DIGESTS for file in code_of(DIGESTS[dep])}
    imported = set().union(*(code_of(script) for script in scripts))
    assert sorted(declared - imported) == [], f"{name} lists code it does not import"
    assert sorted(imported - declared) == [], f"{name} imports code dvc.yaml does not list: edits would not rerun it"


def test_the_code_digest_covers_every_file_the_script_runs_and_changes_with_any(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text("from pkg import a\nimport pkg.b as b\nimport json\n")
    (src / "pkg/__init__.py").write_text("")
    (src / "pkg/a.py").write_text("from pkg.c import X\n")
    (src / "pkg/b.py").write_text("")
    (src / "pkg/c.py").write_text("X = 1\n")
    (src / "pkg/unused.py").write_text("")
    digest = code_digest(src / "main.py")
    assert [line.split("  ")[1] for line in digest.splitlines()] == [
        "main.py", "pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py"]
    (src / "pkg/unused.py").write_text("X = 3\n")
    assert code_digest(src / "main.py") == digest
    (src / "pkg/c.py").write_text("X = 2\n")
    changed = code_digest(src / "main.py")
    assert changed != digest
    src.rename(tmp_path / "elsewhere")  # the same code in another checkout: the same digest
    assert code_digest(tmp_path / "elsewhere/main.py") == changed
