"""The benchmark scripts in bench/ still match the code they measure.

Each script is imported (which must not start the benchmark: the work is
behind ``if __name__ == "__main__"``), and every import statement in it,
including those inside functions, must resolve, so a renamed or removed module
or name fails here rather than the next time someone runs the benchmark.
``.ci/run`` also smoke-runs each script with a tiny N.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[str, str | None, int]]:
    """(module, name or None, line) for every import statement in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
    return found


def test_there_are_benchmarks() -> None:
    assert SCRIPTS, f"no scripts in {BENCH}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_imports_and_does_not_run(script: Path) -> None:
    source = script.read_text(encoding="utf-8")
    assert 'if __name__ == "__main__":' in source, f"{script.name} must only run under __main__"
    assert '"--smoke"' in source, f"{script.name} needs a --smoke option (.ci/run runs each script with it)"
    spec = importlib.util.spec_from_file_location(f"_bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must return at once: nothing is benchmarked on import
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_imports_resolve(script: Path) -> None:
    """Imports inside functions too: the benchmark code runs only when timed."""
    stale = []
    for module_name, name, line in _imports(ast.parse(script.read_text(encoding="utf-8"))):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            stale.append(f"line {line}: import {module_name}: {exc}")
            continue
        if name is not None and not hasattr(module, name):
            try:
                importlib.import_module(f"{module_name}.{name}")
            except ImportError:
                stale.append(f"line {line}: from {module_name} import {name}: no such name")
    assert not stale, f"{script.name} has stale imports:\n" + "\n".join(stale)
