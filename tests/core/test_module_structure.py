"""The shape of the fcnseg package: no import cycle, every module importable on its own, short functions."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from command_runs import PROJECT_ROOT, subprocess_env

PACKAGE = PROJECT_ROOT / "fcnseg"
LONGEST_FUNCTION = 100


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def load_time_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: not those inside functions or under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            type_checking = "TYPE_CHECKING" in ast.unparse(node.test)
            found += load_time_imports(node.orelse) if type_checking else load_time_imports(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            found += load_time_imports(
                node.body + node.orelse + node.finalbody + [stmt for handler in node.handlers for stmt in handler.body]
            )
    return found


def imported_modules(name: str) -> set[str]:
    """fcnseg modules that importing ``name`` imports first, with the packages they sit in.

    Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, unless the importer sits in
    them already (then they are being imported, or were).
    """
    is_package = MODULES[name].name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    targets = set()
    for node in load_time_imports(ast.parse(MODULES[name].read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
        targets.update([base] + [f"{base}.{alias.name}" for alias in node.names])
    found = set()
    for target in targets & set(MODULES):
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            outer = ".".join(parts[:end])
            if outer in MODULES and outer != name and not name.startswith(outer + "."):
                found.add(outer)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_package_init_runs_before_its_module():
    """fcnseg.checkpoint importing fcnseg.weights.checks runs fcnseg/weights/__init__ first."""
    assert {"fcnseg.weights", "fcnseg.weights.checks"} <= imported_modules("fcnseg.engine.state")
    assert "fcnseg.weights" not in imported_modules("fcnseg.weights.convert")  # it sits inside


def test_no_module_imports_itself_through_others():
    graph = {name: imported_modules(name) for name in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_packages_depend_on_each_other_one_way():
    """Between fcnseg's top-level modules and packages (e.g. fcnseg.checkpoint and fcnseg.weights), too."""
    top = {name: ".".join(name.split(".")[:2]) for name in MODULES}
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        graph.setdefault(top[name], set()).update(
            top[other] for other in imported_modules(name) if top[other] != top[name]
        )
    graph.pop("fcnseg")  # the root imports its packages; they never import it by name
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


#: Run by one child interpreter: import fcnseg's third-party dependencies once, then each module of
#: fcnseg in a forked child that has never imported any of fcnseg, as ``python -c "import fcnseg.X"`` would.
_EACH_ON_ITS_OWN = r"""
import importlib, os, sys, traceback

def start(job):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            text, code = job() or "", 0
        except BaseException:
            text, code = traceback.format_exc(), 1
        os.write(write, text.encode())
        os._exit(code)
    os.close(write)
    return pid, read

def finish(child):
    pid, read = child
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    return os.waitpid(pid, 0)[1], text

def everything():
    for name in modules:
        importlib.import_module(name)
    return " ".join(name for name in sys.modules if name.split(".")[0] != "fcnseg")

modules = sys.argv[1:]
status, others = finish(start(everything))
if status:
    sys.exit(f"importing every module in one interpreter failed:\n{others}")
for name in others.split():  # the dependencies, loaded once: each child only runs fcnseg's own code
    try:
        importlib.import_module(name)
    except Exception:
        pass
assert not any(name.split(".")[0] == "fcnseg" for name in sys.modules)
failed = []
for index in range(0, len(modules), 2):  # two children at a time
    children = [
        (name, start(lambda name=name: importlib.import_module(name) and None)) for name in modules[index:index + 2]
    ]
    failed += [f"{name}:\n{text}" for name, child in children for status, text in [finish(child)] if status]
sys.exit("\n".join(failed) or None)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")
def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    names = [name for name in MODULES if name != "fcnseg.__main__"]  # __main__ runs the command line
    done = subprocess.run(
        [sys.executable, "-c", _EACH_ON_ITS_OWN, *names],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]


def test_no_function_is_longer_than_100_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    long.append(f"{name}.{node.name} ({lines} lines)")
    assert not long, long
