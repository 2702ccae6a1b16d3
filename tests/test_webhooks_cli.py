"""``erpq webhook ...`` and ``erpq event emit`` handlers, through their own
argparse groups: output, the secret shown once, one-line errors that change
nothing, and ``emit`` loading capabilities lazily in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import webhook_fixtures
from erpq.cli_support import CliError
from erpq.runtime import Runtime
from webhook_fixtures import add_tenant, deliveries, hook_url, run_queued, webhook

receiver = webhook_fixtures.receiver


def cli(rt: Runtime, *argv: str) -> int:
    """Run an ``erpq`` command on ``rt``; an Ops error becomes CliError as ``main`` prints it."""
    from erpq.cli import build_parser
    from erpq.ops import OpsError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, rt)
    except OpsError as exc:
        raise CliError(str(exc)) from None


@pytest.fixture
def tenant(runtime: Runtime) -> int:
    return add_tenant(runtime)


def secret_of(output: str) -> str:
    return next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("Secret"))


def test_add_shows_the_secret_once_and_list_never(runtime, tenant, receiver, capsys):
    assert cli(runtime, "webhook", "add", hook_url(receiver), "--tenant", "acme",
               "--event", "deal.created,lead.created", "--event", "invoice.created") == 0
    out = capsys.readouterr().out
    secret = secret_of(out)
    assert secret.startswith("whsec_") and secret == webhook(runtime).secret
    assert webhook(runtime).events == ["deal.created", "invoice.created", "lead.created"]

    cli(runtime, "webhook", "list")
    cli(runtime, "webhook", "list", "--json", "--tenant", "acme")
    cli(runtime, "webhook", "deliveries", "--json")
    out = capsys.readouterr().out
    assert secret not in out and "whsec_" not in out
    assert "deal.created,invoice.created,lead.created" in out

    cli(runtime, "webhook", "rotate-secret", "1")
    new = secret_of(capsys.readouterr().out)
    assert new != secret and new == webhook(runtime).secret


def test_disable_enable(runtime, tenant, receiver, capsys):
    cli(runtime, "webhook", "add", hook_url(receiver), "--tenant", str(tenant))
    cli(runtime, "webhook", "disable", "1", "--reason", "maintenance")
    hook = webhook(runtime)
    assert not hook.is_active and hook.disabled_reason == "maintenance"
    cli(runtime, "webhook", "list", "--json")
    listed = json.loads(capsys.readouterr().out.split("\n", 3)[-1])
    assert listed[0]["is_active"] is False and listed[0]["disabled_reason"] == "maintenance"
    cli(runtime, "webhook", "enable", "1")
    hook = webhook(runtime)
    assert hook.is_active and hook.disabled_reason is None and hook.consecutive_failures == 0


@pytest.mark.parametrize("argv,message", [
    (["webhook", "add", "http://127.0.0.1:1/x", "--tenant", "nobody"], "no tenant 'nobody'"),
    (["webhook", "add", "not a url", "--tenant", "acme"], "URL refused"),
    (["webhook", "add", "ftp://127.0.0.1/", "--tenant", "acme"], "scheme 'ftp'"),
    (["webhook", "add", "http://169.254.169.254/", "--tenant", "acme"], "link-local"),
    (["webhook", "add", "http://127.0.0.1:1/", "--tenant", "acme", "--event", "deal.exploded"],
     "unknown event 'deal.exploded'"),
    (["webhook", "disable", "99"], "unknown webhook id 99"),
    (["webhook", "enable", "99"], "unknown webhook id 99"),
    (["webhook", "rotate-secret", "99"], "unknown webhook id 99"),
    (["webhook", "redeliver", "msg_nope"], "unknown delivery 'msg_nope'"),
    (["event", "emit", "deal.created", "--tenant", "acme", "--data", "{oops"], "--data: not valid JSON"),
    (["event", "emit", "deal.created", "--tenant", "acme", "--data", "[1]"], "must be a JSON object"),
    (["event", "emit", "deal.nope", "--tenant", "acme"], "unknown event 'deal.nope'"),
    (["event", "emit", "deal.created", "--tenant", "nobody"], "no tenant"),
])
def test_bad_input_is_one_line_and_changes_nothing(runtime, tenant, argv, message, capsys):
    with pytest.raises(CliError) as info:
        cli(runtime, *argv)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert capsys.readouterr().out == ""
    assert deliveries(runtime) == [] and webhook(runtime) is None
    assert runtime.huey.pending_count() == 0


def test_emit_queues_and_deliveries_lists_and_redeliver(runtime, tenant, receiver, capsys):
    receiver.expect_request("/hook").respond_with_data("ok")
    cli(runtime, "webhook", "add", hook_url(receiver), "--tenant", "acme", "--event", "deal.created")
    capsys.readouterr()
    assert cli(runtime, "event", "emit", "deal.created", "--tenant", "acme", "--data", '{"id": 5}') == 0
    out = capsys.readouterr().out
    (d,) = deliveries(runtime)
    assert "handler(s)" in out and f"fan_out_to_webhooks: {d.delivery_id}" in out
    assert d.payload == {"id": 5}
    run_queued(runtime)
    cli(runtime, "webhook", "deliveries", "--status", "delivered", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert [r["delivery_id"] for r in rows] == [d.delivery_id]
    assert rows[0]["response_code"] == 200
    cli(runtime, "webhook", "redeliver", d.delivery_id)
    assert "Redelivering" in capsys.readouterr().out
    run_queued(runtime)
    assert [r.headers["webhook-id"] for r, _ in receiver.log] == [d.delivery_id, d.delivery_id]
    cli(runtime, "webhook", "deliveries")
    assert d.delivery_id in capsys.readouterr().out


def test_emit_imports_capabilities_lazily_in_a_fresh_process(tmp_path: Path):
    """A process that imports only erpq.events still reaches the webhook handler."""
    (tmp_path / "config.toml").write_text(
        '[queue]\nurl = "sqlite:///queue.db"\n[database]\nurl = "sqlite:///erpq.db"\n[log]\npath = "erpq.log"\n')
    code = (
        "import sys, erpq.events as ev\n"
        "assert 'erpq.webhooks' not in sys.modules\n"
        "from erpq.runtime import current\n"
        "from erpq.models import Tenant\n"
        "with current().session() as s: s.add(Tenant(slug='acme', name='Acme'))\n"
        "print(sorted(ev.emit('deal.created', {'id': 1}, 'acme')))\n"
    )
    env = {**os.environ, "ERPQ_CONFIG": str(tmp_path / "config.toml")}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "erpq.webhooks.service.fan_out_to_webhooks" in out.stdout
