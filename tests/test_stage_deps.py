"""dvc.yaml's code deps are derived from the code: each stage depends on exactly the project
source files its entry module imports, directly or not, at module level or inside functions."""
import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PACKAGE = REPO / "src" / "fashionbench"
# Imported by stages but left out of their deps, each with the reason (also said in dvc.yaml).
NOT_DEPS = {
    "tracking": "MLflow logging: decides what is logged and where, never a DVC output",
}


def imported_modules(module: str) -> set[str]:
    """The fashionbench modules `module`'s source imports anywhere (function bodies included)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fashionbench.")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "fashionbench":
                found |= {a.name for a in node.names}
            elif node.module.startswith("fashionbench."):
                found.add(node.module.split(".")[1])
    return found


def import_closure(entry: str) -> set[str]:
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        if module in seen or module in NOT_DEPS:
            continue
        seen.add(module)
        todo += imported_modules(module)
    return seen


def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def entry_module(stage: dict) -> str:
    cmd = (stage.get("do") or stage)["cmd"]
    return cmd.split("-m fashionbench.")[1].split()[0]


def source_deps(stage: dict) -> set[str]:
    deps = (stage.get("do") or stage)["deps"]
    return {Path(d).stem for d in deps if str(d).startswith("src/fashionbench/")}


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_are_the_import_closure_of_its_entry_module(name):
    stage = stages()[name]
    expected = import_closure(entry_module(stage)) | {"__init__"}
    assert source_deps(stage) == expected


def test_every_stage_but_validate_depends_on_the_validated_params():
    for name, stage in stages().items():
        deps = (stage.get("do") or stage)["deps"]
        if name == "validate":
            assert "params.yaml" in deps  # the whole file: any key, a misspelled one included
        else:
            assert "data/params.validated" in deps, name


def test_the_closure_follows_imports_inside_functions():
    # train imports cpu only inside main(); the closure must still see it.
    assert "cpu" in import_closure("train") and "tracking" not in import_closure("train")
