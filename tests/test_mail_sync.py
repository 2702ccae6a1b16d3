"""crm:sync-email-accounts against a real Dovecot: initial, incremental and
empty syncs, UIDVALIDITY resets without duplicates, odd messages, one bad
account among good ones, back-off, and the server stopping mid-sync."""

from __future__ import annotations

import argparse
import datetime as dt
from email.message import EmailMessage

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

import mail_fixtures
from conftest import make_settings
from crm_fixtures import server_runtime
from erpq.mail import sync
from erpq.mail.models import Email, EmailAccount
from erpq.models import AuditLog, Tenant
from erpq.ops import Ops
from erpq.runtime import Runtime, set_current
from mail_fixtures import make_message

dovecot = mail_fixtures.dovecot
BACKENDS = pytest.mark.parametrize("mail_rt", ["sqlite", "postgresql"], indirect=True)
CONTACTS = sa.table("contacts", sa.column("id"), sa.column("tenant_id"), sa.column("email"),
                    sa.column("first_name"), sa.column("last_name"), sa.column("created_at"))


@pytest.fixture
def mail_rt(request, tmp_path):
    """A runtime on SQLite; ``parametrize("mail_rt", ["sqlite", "postgresql"], indirect=True)`` for both."""
    key = tmp_path / "mail.key"
    key.write_text(Fernet.generate_key().decode())
    mailing = {"key_file": str(key), "fetch_batch": 7, "backoff_after_failures": 2}
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


def add_account(rt, dc, user: str, password: str | None = None, folders=None) -> int:
    if user not in dc.users:
        dc.add_user(user, password or f"pw-{user}")
    acc = Ops(rt).mail.add_account("acme", f"{user}@example.com", imap_host=dc.host, imap_port=dc.port,
                                   imap_security="none", imap_username=user,
                                   imap_password=password or dc.users[user], smtp_host="127.0.0.1",
                                   smtp_port=1, smtp_security="none", folders=folders)
    return acc.id


def emails(rt, account_id=None) -> list[Email]:
    with rt.read_session() as s:
        q = sa.select(Email).order_by(Email.uid)
        if account_id:
            q = q.where(Email.account_id == account_id)
        return list(s.scalars(q))


@BACKENDS
def test_initial_incremental_and_empty_sync_links_contacts_and_marks_nothing_seen(mail_rt, dovecot):
    rt = mail_rt
    acc = add_account(rt, dovecot, "alice")
    with rt.session() as s:
        tid = s.scalar(sa.select(Tenant.id))
        s.execute(sa.insert(CONTACTS).values(tenant_id=tid, email="Bob@Example.com", first_name="Bob",
                                             last_name="B", created_at=dt.datetime.now(dt.UTC)))
    dovecot.append("alice", [make_message(i) for i in range(20)] + [make_message(20, sender="bob@example.com")])

    [r] = Ops(rt).mail.sync(acc)
    assert (r.new, r.error) == (21, None)
    rows = emails(rt)
    assert [e.subject for e in rows] == [f"Message {i}" for i in range(21)]
    assert rows[0].message_id == "<msg-0-alice@example.com>" and rows[0].body_text.startswith("Body of message 0")
    assert rows[-1].contact_id is not None and rows[0].contact_id is None
    with dovecot.mailbox("alice") as mb:
        mb.folder.set("INBOX")
        assert all("\\Seen" not in m.flags for m in mb.fetch(mark_seen=False, headers_only=True))

    dovecot.append("alice", [make_message(i) for i in range(21, 24)])
    [r] = sync.sync_accounts(rt)
    assert r.new == 3
    assert [e.uid for e in emails(rt)] == list(range(1, 25))

    [r] = sync.sync_accounts(rt)  # nothing new: the newest message is not fetched again
    assert (r.new, r.error) == (0, None)
    print(f"empty incremental sync: {r.seconds * 1000:.1f} ms")
    assert len(emails(rt)) == 24
    info = Ops(rt).mail.account(acc)
    assert info.messages == 24 and info.folder_states["INBOX"]["last_uid"] == 24 and info.last_synced_at


@BACKENDS
def test_uidvalidity_reset_resyncs_without_duplicates(mail_rt, dovecot):
    rt = mail_rt
    acc = add_account(rt, dovecot, "carol", folders=["Projects/2026"])
    msgs = [make_message(i, to="carol@example.com") for i in range(10)]
    msgs.append(make_message(99, to="carol@example.com", subject="no id", message_id=False))
    dovecot.append("carol", msgs, folder="Projects/2026")
    assert sync.sync_account(rt, acc).new == 11
    before = {e.message_id or e.fingerprint: e.id for e in emails(rt)}
    first_validity = emails(rt)[0].uidvalidity

    with dovecot.mailbox("carol") as mb:
        mb.folder.delete("Projects/2026")
    dovecot.append("carol", [msgs[-1], *reversed(msgs[:10]), make_message(10, to="carol@example.com")],
                   folder="Projects/2026")
    r = sync.sync_account(rt, acc)
    assert r.error is None and r.new == 1
    rows = emails(rt)
    assert len(rows) == 12
    assert {e.uidvalidity for e in rows} != {first_validity} and len({e.uidvalidity for e in rows}) == 1
    after = {e.message_id or e.fingerprint: e.id for e in rows}
    assert all(after[k] == v for k, v in before.items())  # same rows, moved to their new UIDs
    assert sorted(e.uid for e in rows) == list(range(1, 13))
    assert sync.sync_account(rt, acc).new == 0


def test_charsets_attachments_and_missing_message_id(mail_rt, dovecot):
    rt = mail_rt
    acc = add_account(rt, dovecot, "dave")
    latin = ("From: =?iso-8859-1?q?Ren=E9?= <rene@example.com>\r\nTo: dave@example.com\r\n"
             "Subject: =?iso-8859-1?q?R=E9sum=E9?=\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\n"
             "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
             "Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9 cr\xe8me\r\n").encode("latin-1")
    att = EmailMessage()
    att["From"], att["To"], att["Subject"] = "x@example.com", "dave@example.com", "with files"
    att["Message-ID"] = "<att@example.com>"
    att["In-Reply-To"] = "<parent@example.com>"
    att["Cc"] = "cc1@example.com, cc2@example.com"
    att.set_content("plain part")
    att.add_alternative("<p>html part</p>", subtype="html")
    att.add_attachment(b"\x00\x01" * 5000, maintype="application", subtype="octet-stream", filename="blob.bin")
    att.add_attachment("ü notes", filename="notes.txt")
    dovecot.append("dave", [latin, att])
    assert sync.sync_account(rt, acc).new == 2
    a, b = emails(rt)
    assert a.subject == "Résumé" and "Café crème" in a.body_text and a.message_id is None and a.fingerprint
    assert "rene@example.com" in a.from_address and a.sent_at is not None
    assert b.body_html.strip() == "<p>html part</p>" and b.body_text.strip() == "plain part"
    assert [x["name"] for x in b.attachments] == ["blob.bin", "notes.txt"]
    assert b.attachments[0]["size"] == 10000 and b.attachments[1]["size"] > 0
    assert b.in_reply_to == "<parent@example.com>" and b.cc_addresses == "cc1@example.com, cc2@example.com"


def test_bad_password_on_one_account_others_sync_and_it_backs_off(mail_rt, dovecot):
    rt = mail_rt
    good = add_account(rt, dovecot, "erin")
    other = add_account(rt, dovecot, "frank")
    dovecot.add_user("gina", "right-password")
    bad = add_account(rt, dovecot, "gina", password="wrong-password")
    dovecot.append("erin", [make_message(i, to="erin@example.com") for i in range(5)])
    dovecot.append("frank", [make_message(i, to="frank@example.com") for i in range(3)])

    results = {r.account_id: r for r in sync.sync_accounts(rt)}
    assert results[good].new == 5 and results[other].new == 3
    assert results[bad].error and "wrong-password" not in results[bad].error
    acc = Ops(rt).mail.account(bad)
    assert acc.last_error and acc.consecutive_failures == 1 and acc.backoff_until is None

    results = {r.account_id: r for r in sync.sync_accounts(rt)}  # second failure: backed off
    assert results[bad].error
    acc = Ops(rt).mail.account(bad)
    assert acc.consecutive_failures == 2 and acc.backoff_until is not None and "until" in acc.backoff
    assert bad not in sync.due_accounts(rt)  # not hammered
    assert {r.account_id for r in sync.sync_accounts(rt)} == {good, other}

    with rt.read_session() as s:  # never a password anywhere an operator looks
        audit = " ".join(a.command or "" for a in s.scalars(sa.select(AuditLog)))
        stored = " ".join(a.password_encrypted for a in s.scalars(sa.select(EmailAccount)))
    assert "wrong-password" not in audit and "pw-erin" not in audit and "pw-erin" not in stored
    Ops(rt).mail.enable_account(bad)
    assert bad in sync.due_accounts(rt)


def test_server_stopped_mid_sync_then_restarted_completes_without_gaps_or_duplicates(mail_rt, dovecot,
                                                                                       monkeypatch):
    rt = mail_rt
    acc = add_account(rt, dovecot, "hank")
    dovecot.append("hank", [make_message(i, to="hank@example.com") for i in range(40)])
    real = sync._fetch_and_store
    calls = []

    def stop_after_two_batches(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            dovecot.stop()  # the server goes away between batches
        return real(*args, **kwargs)

    monkeypatch.setattr(sync, "_fetch_and_store", stop_after_two_batches)
    r = sync.sync_account(rt, acc)
    assert r.error and r.new == 14  # two batches of 7 committed
    monkeypatch.setattr(sync, "_fetch_and_store", real)
    assert len(emails(rt)) == 14

    dovecot.start()
    r = sync.sync_account(rt, acc, force=True)
    assert r.error is None and r.new == 26
    rows = emails(rt)
    assert [e.uid for e in rows] == list(range(1, 41))
    assert len({e.message_id for e in rows}) == 40


def test_cli_account_add_list_test_sync_emails(mail_rt, dovecot, capsys, monkeypatch):
    from erpq.mail.cli import register

    rt = mail_rt
    dovecot.add_user("ivy", "s3cret-ivy")
    dovecot.append("ivy", [make_message(i, to="ivy@example.com") for i in range(3)])
    monkeypatch.setenv("IVY_PW", "s3cret-ivy")

    def cli(*argv):
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--config")
        parser = argparse.ArgumentParser(prog="erpq")
        register(parser.add_subparsers(dest="group", required=True), common)
        args = parser.parse_args(argv)
        return args.handler(args, rt)

    assert cli("mail", "account", "add", "ivy@example.com", "--tenant", "acme", "--imap-host", "127.0.0.1",
               "--imap-port", str(dovecot.port), "--imap-security", "none", "--imap-username", "ivy",
               "--imap-password-env", "IVY_PW", "--smtp-host", "127.0.0.1", "--smtp-port", "1",
               "--smtp-security", "none") == 0
    assert cli("mail", "account", "test", "1") == 1  # IMAP works, nothing listens on SMTP port 1
    out = capsys.readouterr().out
    assert "IMAP  ok" in out and "SMTP  FAILED" in out
    assert cli("mail", "sync") == 0
    assert cli("mail", "emails", "--search", "Message 2") == 0
    assert cli("mail", "account", "list", "--json") == 0
    assert cli("mail", "account", "disable", "1") == 0
    out = capsys.readouterr().out
    assert "Message 2" in out and '"messages": 3' in out
    assert "s3cret-ivy" not in out
    with rt.read_session() as s:
        assert "s3cret-ivy" not in " ".join(a.command or "" for a in s.scalars(sa.select(AuditLog)))
    assert sync.due_accounts(rt) == []
