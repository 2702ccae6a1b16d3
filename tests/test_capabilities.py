"""The capability architecture: a capability written as a test fixture
(tests/capfixture) is discovered and works end to end (settings, job,
periodic task, CLI command, Ops read and action, console panel) without any
core file naming it; a capability that fails to load is a loud error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def erpq(tmp_path: Path, *argv: str, extra_env: dict | None = None, check: bool = True):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "ERPQ_CAPABILITIES": "capfixture.capability",
           **(extra_env or {})}
    proc = subprocess.run([sys.executable, "-m", "erpq.cli", "--config", str(tmp_path / "config.toml"), *argv],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent("""
        [queue]
        url = "sqlite:///queue.db"
        [database]
        url = "sqlite:///erpq.db"
        [log]
        path = "erpq.log"
        [greet]
        greeting = "ahoy"
        [schedule.cron]
        "greet:tick" = "*/3 * * * *"
    """))
    return path


def test_a_fixture_capability_works_end_to_end(tmp_path, config):
    sched = json.loads(erpq(tmp_path, "schedule", "list", "--json").stdout)
    tick = next(e for e in sched if e["name"] == "greet:tick")
    assert tick["expression"] == "*/3 * * * *"  # its settings and cron override were read

    erpq(tmp_path, "queue", "dispatch", "GreetJob", "--args", '["ada"]')
    assert "GreetJob" in erpq(tmp_path, "queue", "work", "--once").stdout
    erpq(tmp_path, "schedule", "run", "greet:tick")
    erpq(tmp_path, "queue", "work", "--once")

    greetings = json.loads(erpq(tmp_path, "greet", "list", "--json").stdout)
    assert [g["text"] for g in greetings] == ["ahoy, ada", "ahoy, world"]

    refused = erpq(tmp_path, "--read-only", "greet", "forget", str(greetings[0]["id"]), check=False)
    assert refused.returncode == 1 and "read-only" in refused.stderr
    erpq(tmp_path, "greet", "forget", str(greetings[0]["id"]))
    assert [g["text"] for g in json.loads(erpq(tmp_path, "greet", "list", "--json").stdout)] == ["ahoy, world"]
    audit = json.loads(erpq(tmp_path, "audit", "--json").stdout)
    assert [a["command"] for a in audit if a["action"] == "greet.forget"] == [
        f"erpq greet forget {greetings[0]['id']}"]


def test_the_fixture_capability_has_a_console_panel(tmp_path, config):
    script = textwrap.dedent(f"""
        import asyncio
        from erpq.config import load
        from erpq.ops import Ops
        from erpq.runtime import Runtime, set_current
        from tui.app import ErpqConsole
        from tui.views import VIEWS

        settings = load({str(config)!r})
        rt = Runtime(settings)
        set_current(rt)
        rt.enqueue("GreetJob", "grace")
        task = rt.huey.dequeue(); rt.huey.execute(task)
        keys = [v.KEY for v in VIEWS]

        async def main():
            app = ErpqConsole(Ops(rt), settings, poll=True)
            async with app.run_test(size=(100, 30)) as pilot:
                app.action_show_view("greetings")
                for _ in range(50):
                    await pilot.pause(0.1)
                    view = app.query_one("#view-greetings")
                    if view.table.row_count:
                        break
                print(keys.index("greetings"), view.table.row_count,
                      str(view.table.get_row_at(0)[1]), sep="|")
        asyncio.run(main())
        rt.close()
    """)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "ERPQ_CAPABILITIES": "capfixture.capability"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    index, rows, text = proc.stdout.strip().splitlines()[-1].split("|")
    assert int(index) >= 6 and rows == "1" and text.startswith("ahoy")


def test_a_bad_setting_of_a_capability_is_one_line(tmp_path, config):
    config.write_text(config.read_text().replace('greeting = "ahoy"', 'greeting = " "'))
    proc = erpq(tmp_path, "schedule", "list", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("greet.greeting: must not be empty") and len(proc.stderr.splitlines()) == 1


def test_a_capability_that_fails_to_import_is_a_loud_error(tmp_path, config):
    proc = erpq(tmp_path, "schedule", "list", check=False,
                extra_env={"ERPQ_CAPABILITIES": "capfixture.capability,capfixture.missing"})
    assert proc.returncode == 2
    assert "capfixture.missing failed to import" in proc.stderr and "Traceback" not in proc.stderr


def test_core_files_name_no_capability():
    root = TESTS.parent
    core = [*sorted((root / "erpq").glob("*.py")), *sorted((root / "erpq" / "runtime").glob("*.py")),
            *sorted((root / "erpq" / "ops").glob("*.py")), *sorted((root / "tui").rglob("*.py"))]
    names = ["webhook", "health", "crm", "invoice", "campaign", "reorder"]
    allowed = {"tui/views/health.py"}  # the health capability's own custom view, named by its PanelSpec
    offenders = []
    for path in core:
        rel = path.relative_to(root).as_posix()
        if rel in allowed:
            continue
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            if any(f"import {n}" in code or f".{n}" in code.split("(")[0] and "import" in code for n in names):
                offenders.append(f"{rel}: {line.strip()}")
    assert offenders == []
