"""Email campaigns against a real aiosmtpd: 1,000 recipients received exactly
once, a runner killed mid-campaign resumed without resending, 451 retried and
550 failed with the server's text, pause/resume/cancel, bad templates refused."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

import smtp_fixtures
from conftest import make_settings
from crm_fixtures import server_runtime
from draining import drain
from erpq.mail import campaigns
from erpq.mail.models import EmailCampaignRecipient as R
from erpq.models import JobBatch, Tenant
from erpq.ops import Invalid, Ops
from erpq.runtime import Runtime, set_current

smtp_server = smtp_fixtures.smtp_server
BACKENDS = pytest.mark.parametrize("rt", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def rt(request, tmp_path):
    """SQLite; ``parametrize("rt", ["sqlite", "postgresql"], indirect=True)`` for both."""
    key = tmp_path / "mail.key"
    key.write_text(Fernet.generate_key().decode())
    mailing = {"key_file": str(key), "rate_per_minute": 0, "retry_delays_s": [0, 0]}
    if getattr(request, "param", "sqlite") == "postgresql":
        rt = server_runtime(tmp_path, request.getfixturevalue("pg_url"), mailing=mailing)
    else:
        rt = Runtime(make_settings(tmp_path, mailing=mailing))
    set_current(rt)
    with rt.session() as s:
        s.add(Tenant(slug="acme", name="Acme"))
    yield rt
    set_current(None)
    rt.close()


def campaign(rt, smtp, n: int, tmp_path, body="Hello {{ name }} ({{ email }}), code {{ code }}") -> int:
    ops = Ops(rt).mail
    acc = ops.add_account("acme", "news@example.com", imap_host="127.0.0.1", imap_port=1, imap_security="none",
                          imap_password="pw", smtp_host=smtp.host, smtp_port=smtp.port, smtp_security="none",
                          smtp_username="", smtp_password="")
    c = ops.create_campaign("acme", acc.id, "Launch", "Hi {{ name }}", body)
    path = tmp_path / "r.csv"
    path.write_text("email,name,code\n" + "".join(f"user{i}@example.com,User {i},C{i}\n" for i in range(n))
                    + "not-an-address,Bad,X\nuser0@example.com,Dup,Y\n")
    added, dups, invalid = ops.add_recipients(c.id, csv_path=str(path))
    assert (added, dups) == (n, 1) and invalid == [("line " + str(n + 2), "not an email address: 'not-an-address'")]
    return c.id


def received(smtp) -> dict[str, int]:
    got: dict[str, int] = {}
    for m in smtp.messages:
        for r in m.rcpt_tos:
            got[r] = got.get(r, 0) + 1
    return got


def test_thousand_recipients_each_received_exactly_once(rt, smtp_server, tmp_path):
    cid = campaign(rt, smtp_server, 1000, tmp_path)
    Ops(rt).mail.send(cid)
    drain(rt)
    got = received(smtp_server)
    assert len(got) == 1000 and set(got.values()) == {1}
    info = Ops(rt).mail.campaign(cid)
    assert info.status == "sent" and info.counts["sent"] == 1000 and info.progress == "100%"
    m = next(x.message for x in smtp_server.messages if x.rcpt_tos == ["user7@example.com"])
    assert m["Subject"] == "Hi User 7" and "code C7" in m.get_content()
    assert m["List-Unsubscribe"].startswith("<mailto:") and m["List-Unsubscribe-Post"]
    assert m["Message-ID"] == campaigns.mailer.message_id("campaign", cid, "user7@example.com", "example.com")
    assert smtp_server.connections <= 3  # one connection per batch of 500
    with rt.read_session() as s:
        batch = s.scalars(sa.select(JobBatch).where(JobBatch.kind == "campaign")).one()
        assert (batch.total, batch.pending, batch.finished_at is not None) == (1000, 0, True)


@BACKENDS
def test_killed_runner_resumes_without_resending_and_lists_uncertain(rt, smtp_server, tmp_path):
    cid = campaign(rt, smtp_server, 60, tmp_path)
    Ops(rt).mail.send(cid)
    assert campaigns.run_campaign(rt, cid, stop_after=25) == "stopped"
    # what a SIGKILL between DATA and the reply leaves: one recipient marked sending
    with rt.session() as s:
        rid = s.scalar(sa.select(sa.func.min(R.id)).where(R.campaign_id == cid, R.status == "pending"))
        s.execute(sa.update(R).where(R.id == rid).values(status="sending"))
    drain(rt)
    got = received(smtp_server)
    assert set(got.values()) == {1} and len(got) == 59
    info = Ops(rt).mail.campaign(cid)
    assert info.counts == {"pending": 0, "sending": 0, "sent": 59, "failed": 0, "uncertain": 1}
    [u] = Ops(rt).mail.recipients(cid, status="uncertain").items
    assert u.email not in got


@BACKENDS
def test_451_retried_then_received_550_failed_with_text(rt, smtp_server, tmp_path):
    cid = campaign(rt, smtp_server, 10, tmp_path)
    rt.settings.section("mailing").retry_delays_s = [3600]
    smtp_server.reply_for["user3@example.com"] = "451 4.7.1 try later"
    smtp_server.reply_for["user5@example.com"] = "550 5.1.1 no such user"
    Ops(rt).mail.send(cid)
    drain(rt)
    assert Ops(rt).mail.campaign(cid).status == "sending"  # waiting to retry user3
    [p] = Ops(rt).mail.recipients(cid, status="pending").items
    assert p.email == "user3@example.com" and p.attempts == 1 and p.error.startswith("451")
    del smtp_server.reply_for["user3@example.com"]
    with rt.session() as s:  # the retry is due (instead of waiting the hour)
        s.execute(sa.update(R).where(R.email == "user3@example.com").values(next_attempt_at=None))
    campaigns.run_campaign(rt, cid)
    got = received(smtp_server)
    assert got.get("user3@example.com") == 1 and "user5@example.com" not in got and len(got) == 9
    info = Ops(rt).mail.campaign(cid)
    assert info.status == "sent" and info.counts["failed"] == 1
    [f] = Ops(rt).mail.recipients(cid, status="failed").items
    assert f.email == "user5@example.com" and "550" in f.error and "no such user" in f.error


def test_pause_resume_cancel_and_schedule(rt, smtp_server, tmp_path):
    ops = Ops(rt).mail
    cid = campaign(rt, smtp_server, 30, tmp_path)
    ops.send(cid)
    ops.pause(cid)
    drain(rt)
    assert received(smtp_server) == {} and ops.campaign(cid).status == "paused"
    ops.resume(cid)
    assert campaigns.run_campaign(rt, cid, stop_after=10) == "stopped"
    ops.cancel(cid)
    drain(rt)
    assert len(received(smtp_server)) == 10 and ops.campaign(cid).status == "cancelled"
    with pytest.raises(Exception, match="not paused"):
        ops.resume(cid)

    c2 = ops.create_campaign("acme", 1, "Later", "S", "B")
    with rt.session() as s:
        campaigns._add_rows(s, campaigns.get_campaign(s, c2.id), [("x", "late@example.com", None, {})])
    ops.send(c2.id, at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert ops.campaign(c2.id).status == "scheduled"
    assert campaigns.run_campaign(rt, c2.id) == "scheduled"  # not yet
    with rt.session() as s:
        campaigns.get_campaign(s, c2.id).scheduled_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    campaigns.start_campaigns()
    drain(rt)
    assert ops.campaign(c2.id).status == "sent" and received(smtp_server).get("late@example.com") == 1


def test_bad_template_refused_with_line(rt, smtp_server, tmp_path):
    ops = Ops(rt).mail
    campaign(rt, smtp_server, 1, tmp_path)
    with pytest.raises(Invalid, match="body template: line 2"):
        ops.create_campaign("acme", 1, "Bad", "ok", "Hello\n{% if x %}never closed")
    with rt.read_session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(campaigns.EmailCampaign)) == 1


def test_cli_create_send_status(rt, smtp_server, tmp_path, capsys):
    import argparse

    from erpq.mail.cli import register

    def cli(*argv):
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--config")
        parser = argparse.ArgumentParser(prog="erpq")
        register(parser.add_subparsers(dest="group", required=True), common)
        args = parser.parse_args(argv)
        return args.handler(args, rt)

    cid = campaign(rt, smtp_server, 3, tmp_path)
    (tmp_path / "bad.txt").write_text("{{ unclosed")
    with pytest.raises(Invalid, match="line 1"):
        cli("campaign", "create", "--tenant", "acme", "--account", "1", "--name", "x", "--subject", "s",
            "--body-file", str(tmp_path / "bad.txt"))
    assert cli("campaign", "send", str(cid)) == 0
    drain(rt)
    assert cli("campaign", "status", str(cid)) == 0
    assert "sent 3" in capsys.readouterr().out


def test_smtp_server_down_backs_the_campaign_off_visibly(rt, smtp_server, tmp_path):
    ops = Ops(rt).mail
    cid = campaign(rt, smtp_server, 5, tmp_path)
    smtp_server.stop()  # nothing listening on that port now
    ops.send(cid)
    assert campaigns.run_campaign(rt, cid) == "waiting for the server"
    info = ops.campaign(cid)
    assert info.status == "sending" and info.server_failures == 1 and info.retry_at is not None
    assert f"SMTP {smtp_server.host}:{smtp_server.port}" in info.error and "failure 1 in a row" in info.error
    assert ops.campaigns_page(search="launch").items[0].error == info.error  # what the console shows
    assert info.counts["pending"] == 5
    assert {r.attempts for r in ops.recipients(cid).items} == {0}  # nobody's retries spent
    assert campaigns.run_campaign(rt, cid) == "waiting for the server"
    second = ops.campaign(cid)
    assert second.server_failures == 2 and second.retry_at > info.retry_at  # backed off further

    rt.huey.flush()
    campaigns.start_campaigns()  # not due yet: not hammered
    assert rt.huey.pending_count() == 0

    port = smtp_server.port
    smtp_server.start()
    with rt.session() as s:
        c = campaigns.get_campaign(s, cid)
        c.retry_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        acc = s.get(campaigns.EmailAccount, c.account_id)
        assert acc.smtp_port == port
        acc.smtp_port = smtp_server.port  # the restarted server listens on a new port
    campaigns.start_campaigns()
    drain(rt)
    info = ops.campaign(cid)
    assert info.status == "sent" and info.error is None and info.server_failures == 0
    assert len(received(smtp_server)) == 5


@BACKENDS
def test_envelope_refusal_never_marks_sending_and_lost_data_is_uncertain(rt, smtp_server, tmp_path):
    """The recipient is marked sending only once the envelope is accepted, right before DATA."""
    cid = campaign(rt, smtp_server, 4, tmp_path)
    seen: list[tuple[str, str]] = []
    statuses = {}

    async def at_data(smtp, envelope):
        with rt.read_session() as s:
            statuses.update(dict(s.execute(sa.select(R.email, R.status).where(R.campaign_id == cid)).all()))
        [to] = envelope.rcpt_tos
        seen.append((to, statuses[to]))
        if to == "user2@example.com":
            smtp.transport.close()  # the connection is lost after DATA, before any answer
        return None

    smtp_server.data_hook = at_data
    smtp_server.reply_for["user1@example.com"] = "550 5.1.1 no such user"
    Ops(rt).mail.send(cid)
    drain(rt)
    assert seen[:2] == [("user0@example.com", "sending"), ("user2@example.com", "sending")]
    by = {r.email: r for r in Ops(rt).mail.recipients(cid).items}
    assert by["user1@example.com"].status == "failed" and "550" in by["user1@example.com"].error
    assert by["user2@example.com"].status == "uncertain" and "check before resending" in by["user2@example.com"].error
    assert by["user0@example.com"].status == by["user3@example.com"].status == "sent"
    assert smtp_server.attempts["user2@example.com"] == 1
