"""The shape of the package: floors without an import cycle, a config that reads without torch, functions
that fit on a screen or two, and no script that edits sys.path (docs/extending.md, "Layers")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "imas"
LIMIT = 110  # lines, any function of the package
LOOP_LIMIT = 80  # lines, any phase of the training loop (imas/train.py)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at module level or inside a function alike. `from a import
    b` imports a.b where that is a module, else a; importing a module imports its parent packages too,
    except the importer's own (a package's __init__ importing its submodules is no cycle)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base)
        deps = set()
        for target in found:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                ancestor = ".".join(parts[:i])
                own = name == ancestor or name.startswith(ancestor + ".")
                if ancestor in paths and not own:
                    deps.add(ancestor)
        graph[name] = deps
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] where there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert {"imas.config", "imas.methods", "imas.train"} <= graph.keys()
    assert not cycle(graph), " -> ".join(cycle(graph))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_floors() -> None:
    """The config and the tensor library import nothing above them; predict does not lean on evaluate."""
    graph = import_graph()
    config = {m for m in graph if m == "imas.config" or m.startswith("imas.config.")}
    for module in config:
        assert graph[module] <= config | {"imas.errors"}, module
    floor_1 = ("augment", "cutmix", "label_mix", "contrastive", "hardness", "losses", "ema", "metrics")
    for module in (f"imas.{name}" for name in floor_1):
        assert graph[module] == set(), module
    assert "imas.evaluate" not in graph["imas.predict"]
    methods = {m for m in graph if m.startswith("imas.methods")}
    assert not any("imas.inference" in graph[m] for m in methods), "methods take normalize from below"


def test_the_config_reads_without_torch() -> None:
    code = "import sys, imas.config; assert 'torch' not in sys.modules, sorted(sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_function_of_the_package_is_longer_than_the_limit() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        limit = LOOP_LIMIT if path.name == "train.py" and path.parent == PACKAGE else LIMIT
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    long.append(
                        f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} > {limit} lines)"
                    )
    assert not long, "split these functions: " + ", ".join(long)


def test_nothing_edits_sys_path() -> None:
    needles = ["sys.path." + verb for verb in ("insert", "append")]  # split: this file does not find itself
    paths = [
        *REPO.glob("*.py"),
        *(p for d in ("imas", "tools", "tests", "benchmarks") for p in (REPO / d).rglob("*.py")),
    ]
    found = [
        str(p.relative_to(REPO)) for p in paths if any(n in p.read_text(encoding="utf-8") for n in needles)
    ]
    assert not found, found


def test_no_code_changes_a_loaded_config() -> None:
    """A config is what the file and its overrides say: no module outside imas/config assigns its fields
    (`--seed` is an override, a report reads a run as another method through from_dict's overrides)."""
    import re

    assignment = re.compile(r"\b(cfg|config|self\.cfg|run\.cfg)\.\w+\.\w+\s*(=|\+=|-=)(?!=)")
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for folder in ("imas", "tools")
        for path in (REPO / folder).rglob("*.py")
        if "config" not in path.relative_to(REPO).parts[1:2]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if assignment.search(line)
    ]
    assert not found, found
