"""The package's architecture, read from the code so that it cannot rot.

- dvc.yaml's code deps: each stage depends on exactly the project source files its entry module
  imports, directly or not, at module level or inside functions (the tracking package aside).
- core/ is a library: it imports nothing of the stages, tracking, the report or the tools, and
  nothing of DVC, MLflow, Ray or argparse.
- A stage imports the library, never another stage; no module imports its way back to itself.
- No module is over 350 lines.
"""
import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "fashionbench"
# Imported by stages but left out of their deps, each with the reason (also said in dvc.yaml).
NOT_DEPS = {
    "fashionbench.tracking": "MLflow logging: decides what is logged and where, never a DVC output",
}
MAX_LINES = 350


def module_file(module: str) -> Path | None:
    base = SRC / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> list[str]:
    return sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def imported_modules(module: str) -> set[str]:
    """The fashionbench modules `module`'s source imports anywhere (function bodies included),
    with the packages that Python runs on the way (their __init__.py)."""
    tree = ast.parse(module_file(module).read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from fashionbench.report import figures` imports a module; `... import build_report` a name.
            names = [f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}") else node.module
                     for a in node.names]
        for name in names:
            if name.split(".")[0] != "fashionbench":
                continue
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
    return {m for m in found if module_file(m)}


def import_closure(entry: str, skip=NOT_DEPS) -> set[str]:
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        if module in seen or any(module == s or module.startswith(s + ".") for s in skip):
            continue
        seen.add(module)
        todo += imported_modules(module)
    return seen


def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def entry_module(stage: dict) -> str:
    cmd = (stage.get("do") or stage)["cmd"]
    return cmd.split("python -m ")[1].split()[0]


def source_deps(stage: dict) -> set[str]:
    deps = (stage.get("do") or stage)["deps"]
    return {str(d) for d in deps if str(d).startswith("src/")}


def dep_paths(modules: set[str]) -> set[str]:
    return {str(module_file(m).relative_to(REPO)) for m in modules | {"fashionbench"}}


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_are_the_import_closure_of_its_entry_module(name):
    stage = stages()[name]
    assert source_deps(stage) == dep_paths(import_closure(entry_module(stage)))


@pytest.mark.parametrize("name", sorted(stages()))
def test_each_stage_runs_its_own_module_of_the_stages_package(name):
    assert entry_module(stages()[name]) == f"fashionbench.stages.{name}"


def test_every_stage_but_validate_depends_on_an_output_of_validate():
    for name, stage in stages().items():
        spec = stage.get("do") or stage
        if name == "validate":
            assert {"params.yaml": None} in spec["params"]  # the whole file: any key, a misspelled one too
        else:
            assert any(str(d).startswith(("data/params.validated", "data/config/")) for d in spec["deps"]), name


def test_the_closure_follows_imports_inside_functions():
    # train imports the runtime and tracking only inside main(); the closure sees the one it keeps.
    closure = import_closure("fashionbench.stages.train")
    assert "fashionbench.core.runtime" in closure
    assert not any(m.startswith("fashionbench.tracking") for m in closure)


def test_the_library_imports_nothing_above_it():
    for module in all_modules():
        if not module.startswith("fashionbench.core"):
            continue
        tree = ast.parse(module_file(module).read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                top = name.split(".")[0]
                assert top not in ("dvc", "mlflow", "ray", "argparse"), f"{module} imports {name}"
                if top == "fashionbench":
                    assert name == "fashionbench" or name.startswith("fashionbench.core"), f"{module} imports {name}"


def test_a_stage_never_imports_another_stage():
    for module in all_modules():
        if module.startswith("fashionbench.stages."):
            others = {m for m in imported_modules(module) if m.startswith("fashionbench.stages.")}
            assert others <= {module}, f"{module} imports {sorted(others)}"


def test_no_module_imports_its_way_back_to_itself():
    for module in all_modules():
        for imported in imported_modules(module) - {module}:
            if module.startswith(imported + "."):
                continue  # a package's own __init__, run on the way in
            assert module not in import_closure(imported, skip={}), f"{module} -> {imported} -> ... -> {module}"


def test_no_package_imports_its_way_back_to_another():
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges = {(package(m), package(i)) for m in all_modules() for i in imported_modules(m) if package(m) != package(i)
             and i != "fashionbench"}
    for a, b in edges:
        assert (b, a) not in edges, f"{a} and {b} import each other"


def test_no_module_is_over_350_lines():
    sizes = {m: len(module_file(m).read_text().splitlines()) for m in all_modules()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
