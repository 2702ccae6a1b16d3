"""The console's contract with Ops (``erpq.ops.contract.ConsoleOps``): the real
``Ops`` and the console tests' ``FakeOps`` both keep to it, signature by
signature, so the test double cannot drift from the real API."""

from __future__ import annotations

import inspect

from console_fixtures import FakeOps
from erpq.ops import Ops
from erpq.ops.contract import ConsoleOps

#: What the console reads on every poll: a stand-in must offer all of these.
READS = {"schedule", "queue_counts", "pending", "scheduled", "running", "failed", "failure_clusters", "runs",
         "log_tail", "batches", "runners", "locks", "section", "section_names"}


def members() -> list[str]:
    return [n for n, v in vars(ConsoleOps).items() if callable(v) and not n.startswith("_")]


def params(func) -> list[tuple[str, object]]:
    sig = inspect.signature(func)
    return [(p.name, p.default) for p in sig.parameters.values() if p.name != "self"]


def test_the_real_ops_keeps_the_contract():
    for name in members():
        assert hasattr(Ops, name), name
        assert params(getattr(Ops, name)) == params(getattr(ConsoleOps, name)), name


def test_the_console_double_keeps_the_contract():
    offered = {n for n in members() if n in vars(FakeOps) or any(n in vars(b) for b in FakeOps.__mro__[1:-1])}
    assert READS <= offered, READS - offered
    for name in offered:
        assert params(getattr(FakeOps, name)) == params(getattr(ConsoleOps, name)), name


def test_the_console_calls_only_the_contract():
    """Every ``ops.<name>(`` the console writes is in the contract (or is a capability section)."""
    import re
    from pathlib import Path

    tui = Path(__file__).parent.parent / "tui"
    called = set()
    for path in tui.rglob("*.py"):
        called |= set(re.findall(r"\bops\.(\w+)\(", path.read_text()))
    assert called <= set(members()), called - set(members())
