"""Issue 13: actions commit with their audit row or not at all, and bad input is a
one-line error that changes nothing, the same on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa

from badinput import close_dumps, dump, run_cli, write_config
from conftest import MARIADB_URL, PG_URL, db_available, need, reset_database
from erpq.runtime import job, set_current

LONG = 600


@job("BadInputEcho")
def bad_input_echo(text, n=0):
    return text


def _make_cfg(kind, tmp_path):
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/db.sqlite"
    else:
        url = PG_URL if kind == "postgres" else MARIADB_URL
        need(kind, db_available(url), url)
        reset_database(url)
    path = write_config(tmp_path, url)
    assert run_cli(path, ["db", "upgrade"]).code == 0
    assert run_cli(path, ["tenant", "add", "acme"]).code == 0
    return path


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def cfg(request, tmp_path):
    yield _make_cfg(request.param, tmp_path)
    close_dumps()
    set_current(None)


@pytest.fixture
def sqlite_cfg(tmp_path):
    yield _make_cfg("sqlite", tmp_path)
    close_dumps()
    set_current(None)


def audit_rows(cfg):
    from erpq.config import load
    from erpq.runtime import Runtime

    rt = Runtime(load(cfg))
    try:
        with rt.read_session() as s:
            return [dict(r._mapping) for r in s.execute(sa.text(
                "SELECT action, target, command FROM audit_log ORDER BY id"))]
    finally:
        rt.close()


# ---------------------------------------------------------------- 1. action and audit row together


def test_webhook_add_with_a_600_char_url_is_added_audited_and_shows_its_secret(cfg):
    url = "https://example.com/" + "a" * (LONG - 20)
    r = run_cli(cfg, ["webhook", "add", url, "--tenant", "acme"])
    assert r.code == 0, r.err
    assert "Secret (shown once" in r.out
    (row,) = [a for a in audit_rows(cfg) if a["action"] == "webhook.add"]
    assert url in row["command"]  # the whole command, in a text column
    assert len(row["target"]) <= 255 and "[cut, " in row["target"]


def test_webhook_disable_with_a_600_char_reason(cfg):
    assert run_cli(cfg, ["webhook", "add", "https://example.com/h", "--tenant", "acme"]).code == 0
    before = dump(cfg)
    r = run_cli(cfg, ["webhook", "disable", "1", "--reason", "r" * LONG])
    assert r.code == 2 and r.err.count("\n") == 1 and "longer than 512" in r.err
    assert dump(cfg) == before
    r = run_cli(cfg, ["webhook", "disable", "1", "--reason", "r" * 512])
    assert r.code == 0, r.err
    assert [a["action"] for a in audit_rows(cfg)].count("webhook.disable") == 1


def test_ops_level_length_check_guards_non_cli_callers(cfg):
    from erpq.config import load
    from erpq.ops import Invalid, Ops
    from erpq.runtime import Runtime

    assert run_cli(cfg, ["webhook", "add", "https://example.com/h", "--tenant", "acme"]).code == 0
    before = dump(cfg)
    rt = Runtime(load(cfg))
    try:
        with pytest.raises(Invalid, match="longer than 512"):
            Ops(rt).webhooks.disable(1, "r" * LONG)
        with pytest.raises(Invalid, match="from 1 to"):
            Ops(rt).webhooks.disable(2**40)
    finally:
        rt.close()
    assert dump(cfg) == before


def test_queue_dispatch_with_600_char_args_is_enqueued_and_audited(cfg):
    text = "x" * LONG
    r = run_cli(cfg, ["queue", "dispatch", "BadInputEcho", "--args", json.dumps([text])])
    assert r.code == 0, r.err
    (row,) = [a for a in audit_rows(cfg) if a["action"] == "queue.dispatch"]
    assert text in row["command"]
    assert len(dump(cfg)["pending"]) == 1


def test_a_failing_action_leaves_neither_its_effect_nor_its_audit_row(cfg):
    """The audit row is in the action's transaction: an audit insert that fails undoes the action."""
    from erpq.config import load
    from erpq.ops import Ops
    from erpq.ops import base as ops_base
    from erpq.runtime import Runtime

    assert run_cli(cfg, ["webhook", "add", "https://example.com/h", "--tenant", "acme"]).code == 0
    before = dump(cfg)
    rt = Runtime(load(cfg))
    real = ops_base._fit_row

    def broken(row):  # an audit row the database refuses (NOT NULL column left empty)
        row = real(row)
        row.actor = None
        return row

    ops_base._fit_row = broken
    try:
        with pytest.raises(sa.exc.IntegrityError):
            Ops(rt).webhooks.disable(1, "maintenance")
        with pytest.raises(sa.exc.IntegrityError):
            Ops(rt).add_tenant("other")
    finally:
        ops_base._fit_row = real
        rt.close()
    assert dump(cfg) == before


def test_a_failed_enqueue_takes_the_audit_row_back(cfg):
    from erpq.config import load
    from erpq.ops import Ops
    from erpq.runtime import Runtime

    before = dump(cfg)
    rt = Runtime(load(cfg))
    try:
        def refuse(*_a, **_k):
            raise ConnectionError("queue store gone")

        rt.huey.enqueue = refuse
        with pytest.raises(ConnectionError):
            Ops(rt).dispatch("BadInputEcho", ["hi"])
    finally:
        rt.close()
    assert dump(cfg) == before


# ---------------------------------------------------------------- 2. validate before acting

BAD = [
    (["queue", "prune-failed", "--hours", "nan"], 2, "out of range"),
    (["queue", "prune-failed", "--hours", "inf"], 2, "out of range"),
    (["queue", "prune-failed", "--hours", "1e12"], 2, "out of range"),
    (["queue", "prune-failed", "--hours", "-1"], 2, "out of range"),
    (["log", "-n", "-1"], 2, "out of range"),
    (["queue", "failed", "--limit", "-1"], 2, "out of range"),
    (["queue", "failed", "--offset", "-1"], 2, "out of range"),
    (["runs", "--limit", "-5"], 2, "out of range"),
    (["audit", "--limit", "-1"], 2, "out of range"),
    (["webhook", "deliveries", "--offset", "-1"], 2, "out of range"),
    (["queue", "show", str(2**31)], 2, "out of range"),
    (["queue", "forget", str(2**40)], 2, "out of range"),
    (["webhook", "disable", "3000000000"], 2, "out of range"),
    (["webhook", "enable", "0"], 2, "out of range"),
    (["user", "add", "Bob", "--tenant", "99999999999"], 1, "no tenant"),
    (["webhook", "add", "https://example.com/" + "a" * 2100, "--tenant", "acme"], 2, "longer than 2048"),
    (["webhook", "add", "https://example.com/", "--tenant", "acme", "--description", "d" * 300], 2,
     "longer than 255"),
    (["tenant", "add", "beta", "--name", "n" * 300], 2, "longer than 255"),
    (["queue", "restore", "999999"], 1, "no forgotten failed job with id 999999"),
    (["queue", "dispatch", "BadInputEcho", "--args", "[]"], 1, "arguments do not fit"),
    (["queue", "dispatch", "BadInputEcho", "--args", '{"nope": 1}'], 1, "arguments do not fit"),
    (["queue", "dispatch", "BadInputEcho", "--args", '["a", 1, 2]'], 1, "arguments do not fit"),
    (["queue", "dispatch", "BadInputEcho", "--args", '{"args": 1}'], 1, '"args" must be a JSON array'),
    (["queue", "dispatch", "BadInputEcho", "--args", "[" * 5000 + "]" * 5000], 1, "nested too deeply"),
    (["queue", "dispatch", "BadInputEcho", "--args", json.dumps(["x" * 70_000])], 1, "longer than 65536"),
    (["event", "emit", "deal.created", "--tenant", "acme", "--data", '{"name": "caf\udce9"}'], 2,
     "not valid UTF-8"),
    (["webhook", "add", "https://example.com/caf\udce9", "--tenant", "acme"], 2, "not valid UTF-8"),
    (["queue", "cancel", "x" * 5000], 1, "no pending or scheduled job"),
]


@pytest.mark.parametrize("argv, code, message", BAD, ids=[" ".join(a)[:50] for a, _c, _m in BAD])
def test_bad_input_is_one_line_and_changes_nothing(sqlite_cfg, argv, code, message):
    cfg = sqlite_cfg
    before = dump(cfg)
    r = run_cli(cfg, argv)
    assert r.code == code, r
    assert message in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert dump(cfg) == before


#: The cases the servers read differently from SQLite (int4 ids, negative paging, sizes, encodings).
ON_SERVERS = [0, 5, 6, 11, 12, 14, 16, 17, 18, 19, 25, 26]


def test_bad_input_on_servers_is_one_line_and_changes_nothing(cfg):
    before = dump(cfg)
    for i in ON_SERVERS:
        argv, code, message = BAD[i]
        r = run_cli(cfg, argv)
        assert r.code == code and message in r.err and r.err.count("\n") == 1, (argv, r)
    assert dump(cfg) == before


def test_event_payload_that_cannot_be_encoded_is_refused_by_ops(cfg):
    from erpq.config import load
    from erpq.ops import Invalid, Ops
    from erpq.runtime import Runtime

    before = dump(cfg)
    rt = Runtime(load(cfg))
    try:
        with pytest.raises(Invalid, match="not valid UTF-8"):
            Ops(rt).emit_event("deal.created", {"name": "caf\udce9"}, "acme")
        with pytest.raises(Invalid, match="not JSON|not storable"):
            Ops(rt).emit_event("deal.created", {"x": float("nan")}, "acme")
    finally:
        rt.close()
    assert dump(cfg) == before


# ---------------------------------------------------------------- config and environment (SQLite only)


def test_config_that_is_not_utf8_exits_2_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[database]\nurl = "sqlite:///caf\xe9.db"\n')
    r = run_cli(str(bad), ["schedule", "list"])
    assert r.code == 2 and "not UTF-8" in r.err and r.err.count("\n") == 1


def test_a_missing_database_driver_is_one_line(tmp_path):
    path = write_config(tmp_path, "postgresql+nosuchdriver://u@127.0.0.1/x")
    r = run_cli(path, ["tenant", "list"])
    assert r.code == 2 and r.err.count("\n") == 1 and "database" in r.err, r


@pytest.mark.skipif(os.geteuid() == 0, reason="root can create the folder anywhere")
def test_uncreatable_sqlite_path_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    path = write_config(tmp_path, f"sqlite:///{locked}/sub/db.sqlite")
    r = run_cli(path, ["tenant", "list"])
    assert r.code == 2 and "cannot create the folder" in r.err and r.err.count("\n") == 1


def test_sqlite_path_under_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    path = write_config(tmp_path, f"sqlite:///{tmp_path}/afile/db.sqlite")
    r = run_cli(path, ["tenant", "list"])
    assert r.code == 2 and "cannot create the folder" in r.err and r.err.count("\n") == 1, r


def test_args_size_limit_comes_from_config(tmp_path):
    path = write_config(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", extra="")
    text = open(path).read().replace("workers = 2\n", "workers = 2\nmax_args_bytes = 100\n")
    open(path, "w").write(text)
    r = run_cli(path, ["queue", "dispatch", "BadInputEcho", "--args", json.dumps(["y" * 200])])
    assert r.code == 1 and "longer than 100 bytes" in r.err
