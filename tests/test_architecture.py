"""The layout's two rules, checked on the source: no import cycles in the core, and the core names no venue."""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import schemahub_core

CORE = Path(schemahub_core.__file__).parent
VENUES = re.compile(r"binance|coinbase|kraken|okx", re.IGNORECASE)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Core modules ``name`` imports anywhere in its body (lazy and type-checking imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule when there is one
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _core_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # the package's public API re-exports from its subpackages; importing "schemahub_core" for hookimpl is an edge
    # to that facade, which is fine as long as the facade itself imports nothing that comes back to it
    return graph


def test_the_core_has_no_import_cycles():
    graph = _core_graph()
    assert "schemahub_core.engine.ingest" in graph and graph["schemahub_core.engine.ingest"]  # the walk sees edges
    assert _cycles(graph) == []


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _code_without_docs(source: str) -> str:
    """The source with comments and docstrings blanked: what is left is code and user-facing strings."""
    docstrings: set[tuple[int, int]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                docstrings.add((first.lineno, first.col_offset))
    kept = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.start in docstrings):
            continue
        kept.append(tok.string)
    return " ".join(kept)


def test_no_core_module_names_a_venue():
    offenders = {}
    for name, path in _modules().items():
        hits = sorted(set(m.group(0).lower() for m in VENUES.finditer(_code_without_docs(path.read_text()))))
        if hits:
            offenders[name] = hits
    assert offenders == {}


def test_the_venue_check_sees_code_but_not_docs():
    source = '"""Binance docs."""\n# kraken comment\nx = "coinbase"\n'
    assert VENUES.findall(_code_without_docs(source)) == ["coinbase"]


def _sandbox_venues(load_plugins: str) -> subprocess.CompletedProcess:
    code = "from schemahub_core.sandbox import Sandbox; print(','.join(Sandbox().venues))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SCHEMAHUB_LOAD_PLUGINS": load_plugins})


def test_the_sandbox_serves_exactly_the_installed_venue_plugins():
    assert _sandbox_venues("binance").stdout.strip() == "binance"
    assert set(_sandbox_venues("binance,coinbase,kraken").stdout.strip().split(",")) == {"binance", "coinbase",
                                                                                         "kraken"}
    assert _sandbox_venues("").stdout.strip() == ""  # the core alone serves no venue


def test_the_sandbox_command_with_no_venue_plugin_says_so_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "schemahub_core", "sandbox", "--port", "0"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "SCHEMAHUB_LOAD_PLUGINS": ""})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: no simulated venue is installed: venue plugins bring theirs (pip install schemahub-<venue>)"]
