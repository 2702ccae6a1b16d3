"""Mail throughput: erpq against the bare libraries, same run, same work.

    python bench/mail.py [--messages 2000] [--sync 5000] [--database URL] [--smoke]

1. **Campaign send.** An aiosmtpd server runs in a subprocess on 127.0.0.1
   (accepts everything, keeps nothing). Then N messages each way:

   - bare loop: one ``smtplib.SMTP`` connection, N times: render subject and
     body with ``str.format``, build an ``EmailMessage`` (Message-ID,
     List-Unsubscribe headers), ``send_message``;
   - erpq: a campaign of N recipients (created outside the clock), then
     ``SendEmailCampaignJob``'s body (``campaigns.run_campaign``): sandboxed
     Jinja2 templates, one connection per ``smtp_batch``, a durable commit per
     message right before DATA (the exactly-once bookkeeping), progress rows.

2. **IMAP sync.** A throwaway Dovecot (tests/mail_fixtures.py) with M messages
   (text + HTML, every 50th with an attachment) written to the user's maildir.

   - bare loop: imap-tools, ``EXAMINE INBOX``, one bulk ``fetch(mark_seen=False,
     bulk=True)``, each message's fields (sender, recipients, subject, date,
     bodies, attachment names and sizes, Message-ID, In-Reply-To) into a dict;
   - erpq: ``sync.sync_account`` from scratch: UIDVALIDITY/UIDNEXT, sizes,
     batches of ``fetch_batch`` messages, contact/lead linking, rows committed
     per batch with the folder state.

   Then the incremental sync that finds nothing new (median of 20 runs),
   which is what every 5-minute run costs per account.

Ratios are erpq rate / bare rate (targets: send >= 0.7x, sync >= 0.6x). For
the send, the time erpq spends in the one commit per message that makes a
resumed campaign send nobody twice (recipient marked ``sending`` before DATA,
with the previous outcome) is printed too: that durable write (an fsync on
SQLite and PostgreSQL) is what the bare loop does not do, and on a loopback
server it costs as much as the SMTP transaction itself. The
database is SQLite in a temporary directory unless ``--database`` names a
server database, whose tables are all dropped first (use a database of your
own, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/erpq_bench_mail``).
``--smoke`` runs a handful of each: it proves the script works and measures
nothing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOKE = (20, 30)

SERVER = r'''
import sys, time
from aiosmtpd.controller import Controller

class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"

c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
'''


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_smtp() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc, port


def bare_send(port: int, n: int) -> float:
    subject_t, body_t = "Hi {name}", "Hello {name} ({email}), your code is {code}.\n\nRegards\n"
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for i in range(n):
            to = f"user{i}@example.com"
            ctx = {"name": f"User {i}", "email": to, "code": f"C{i}"}
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "news@example.com", to, subject_t.format(**ctx)
            msg["Message-ID"] = f"<campaign.bare.{i}@example.com>"
            msg["List-Unsubscribe"] = "<mailto:unsubscribe@example.com?subject=unsubscribe>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            msg.set_content(body_t.format(**ctx))
            smtp.send_message(msg, from_addr="news@example.com", to_addrs=[to])
    return time.perf_counter() - started


def make_runtime(tmp: Path, database: str | None):
    from cryptography.fernet import Fernet

    from erpq.config import from_dict
    from erpq.models import Tenant
    from erpq.runtime import Runtime, set_current

    key = tmp / "mail.key"
    key.write_text(Fernet.generate_key().decode())
    raw = {"queue": {"url": "sqlite:///queue.db"}, "database": {"url": database or "sqlite:///erpq.db"},
           "log": {"path": "erpq.log"},
           "mailing": {"key_file": str(key), "rate_per_minute": 0, "timeout_s": 30.0}}
    if database:
        import sqlalchemy as sa

        from erpq.db import make_engine, upgrade

        engine = sa.create_engine(database)
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            for table in reversed(meta.sorted_tables):
                conn.execute(sa.schema.DropTable(table, if_exists=True))
        engine.dispose()
        engine = make_engine(database)
        upgrade(engine)
        engine.dispose()
    rt = Runtime(from_dict(raw, source=str(tmp / "config.toml"), base_dir=str(tmp)))
    set_current(rt)
    with rt.session() as s:
        s.add(Tenant(slug="bench", name="Bench"))
    return rt


def erpq_send(rt, tmp: Path, port: int, n: int) -> float:
    from erpq.mail import campaigns
    from erpq.ops import Ops

    ops = Ops(rt).mail
    acc = ops.add_account("bench", "news@example.com", imap_host="127.0.0.1", imap_port=1, imap_security="none",
                          imap_password="x", smtp_host="127.0.0.1", smtp_port=port, smtp_security="none", smtp_username="",
                          smtp_password="")
    c = ops.create_campaign("bench", acc.id, "Bench", "Hi {{ name }}",
                            "Hello {{ name }} ({{ email }}), your code is {{ code }}.\n\nRegards\n")
    csv = tmp / "recipients.csv"
    csv.write_text("email,name,code\n" + "".join(f"user{i}@example.com,User {i},C{i}\n" for i in range(n)))
    ops.add_recipients(c.id, csv_path=str(csv))
    ops.send(c.id)
    rt.huey.flush()  # the job's body runs here, in this thread
    real_write, spent = campaigns._write, [0.0]

    def timed_write(*a, **k):  # only measures: how much of the time is the durable bookkeeping
        t = time.perf_counter()
        try:
            return real_write(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t

    campaigns._write = timed_write
    started = time.perf_counter()
    try:
        why = campaigns.run_campaign(rt, c.id)
    finally:
        campaigns._write = real_write
    elapsed = time.perf_counter() - started
    erpq_send.bookkeeping = spent[0]
    info = ops.campaign(c.id)
    assert why == "sent" and info.counts["sent"] == n, (why, info.counts, info.error)
    return elapsed


def fill_maildir(dc, user: str, m: int) -> None:
    from email.message import EmailMessage as Msg

    dc.add_user(user, "pw")
    maildir = dc.dir / "home" / user / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for i in range(m):
        msg = Msg()
        msg["From"] = f"Sender {i % 37} <sender{i % 37}@example.com>"
        msg["To"] = f"{user}@example.com"
        msg["Cc"] = "team@example.com"
        msg["Subject"] = f"Order {i}: shipment update"
        msg["Date"] = "Mon, 30 Nov 2026 10:00:00 +0000"
        msg["Message-ID"] = f"<bench-{i}@example.com>"
        if i % 3:
            msg["In-Reply-To"] = f"<bench-{i - 1}@example.com>"
        text = f"Hello,\n\nyour order {i} has shipped.\n" + "Line of text in the body. " * 30 + "\n"
        msg.set_content(text)
        msg.add_alternative(f"<html><body><p>Hello,</p><p>your order <b>{i}</b> has shipped.</p>"
                            + "<p>Line of text in the body.</p>" * 30 + "</body></html>", subtype="html")
        if i % 50 == 0:
            msg.add_attachment(b"%PDF-1.4 " + bytes(range(256)) * 40, maintype="application", subtype="pdf",
                               filename=f"invoice-{i}.pdf")
        (maildir / "new" / f"{1_700_000_000 + i}.M{i}P1.bench").write_bytes(bytes(msg))
    subprocess.run(["chown", "-R", "dovenull:nogroup", str(dc.dir / "home")], check=True)


def bare_fetch(dc, user: str) -> tuple[float, int]:
    from imap_tools import MailBoxUnencrypted

    started = time.perf_counter()
    rows = []
    with MailBoxUnencrypted(dc.host, dc.port).login(user, "pw", initial_folder=None) as mb:
        mb.folder.set("INBOX", readonly=True)
        for m in mb.fetch(mark_seen=False, bulk=True):
            rows.append(dict(uid=int(m.uid), from_address=m.from_, to=",".join(m.to), cc=",".join(m.cc),
                             subject=m.subject, date=m.date, text=m.text, html=m.html,
                             attachments=[{"name": a.filename, "size": a.size} for a in m.attachments],
                             message_id=(m.headers.get("message-id") or [None])[0],
                             in_reply_to=(m.headers.get("in-reply-to") or [None])[0]))
    return time.perf_counter() - started, len(rows)


def erpq_sync(rt, dc, user: str, m: int) -> tuple[float, float]:
    from erpq.mail import sync
    from erpq.ops import Ops

    acc = Ops(rt).mail.add_account("bench", f"{user}@example.com", imap_host=dc.host, imap_port=dc.port,
                                   imap_security="none", imap_username=user, imap_password="pw",
                                   smtp_host="127.0.0.1", smtp_port=1, smtp_security="none").id
    started = time.perf_counter()
    r = sync.sync_account(rt, acc, force=True)
    elapsed = time.perf_counter() - started
    assert r.error is None and r.new == m, (r.error, r.new)
    empty = []
    for _ in range(20):
        t = time.perf_counter()
        r = sync.sync_account(rt, acc, force=True)
        empty.append(time.perf_counter() - t)
        assert r.error is None and r.new == 0
    return elapsed, statistics.median(empty)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=2000, help="messages sent each way (default 2000)")
    p.add_argument("--sync", type=int, default=5000, help="messages synced each way (default 5000)")
    p.add_argument("--database", help="a server database URL (all its tables are dropped); default SQLite")
    p.add_argument("--smoke", action="store_true", help="a handful of each: proves the script runs")
    args = p.parse_args(argv)
    n, m = SMOKE if args.smoke else (args.messages, args.sync)
    sys.path.insert(0, str(ROOT / "tests"))
    # The Dovecot and aiosmtpd servers are the tests' fixtures (tests/mail_fixtures.py).
    mail_fixtures = importlib.import_module("mail_fixtures")

    with tempfile.TemporaryDirectory(prefix="erpq-bench-mail-") as d:
        tmp = Path(d)
        os.chdir(tmp)
        rt = make_runtime(tmp, args.database)
        server, port = start_smtp()
        try:
            bare_s = bare_send(port, n)
            erpq_s = erpq_send(rt, tmp, port, n)
        finally:
            server.stdin.close()
            server.wait(10)
        print(f"send {n} messages, database {rt.settings.database.url.split('@')[-1]}:")
        print(f"  bare smtplib loop, one connection : {n / bare_s:8.0f} msg/s ({bare_s:.2f} s)")
        print(f"  erpq campaign (SendEmailCampaignJob): {n / erpq_s:8.0f} msg/s ({erpq_s:.2f} s)")
        print(f"  ratio erpq/bare: {bare_s / erpq_s:.2f}x (target >= 0.7x)")
        book = erpq_send.bookkeeping
        print(f"  of erpq's time, the commit per message before DATA: {book / n * 1000:.1f} ms/msg "
              f"({100 * book / erpq_s:.0f}%); without it the ratio would be {bare_s / (erpq_s - book):.2f}x")

        dc = mail_fixtures.Dovecot()
        try:
            fill_maildir(dc, "bench", m)
            dc.start()
            bare_f, got = bare_fetch(dc, "bench")
            assert got == m, got
            erpq_f, empty = erpq_sync(rt, dc, "bench", m)
        finally:
            dc.cleanup()
        print(f"sync {m} messages from Dovecot:")
        print(f"  bare imap-tools bulk fetch: {m / bare_f:8.0f} msg/s ({bare_f:.2f} s)")
        print(f"  erpq sync_account         : {m / erpq_f:8.0f} msg/s ({erpq_f:.2f} s)")
        print(f"  ratio erpq/bare: {bare_f / erpq_f:.2f}x (target >= 0.6x)")
        print(f"  incremental sync finding nothing new: {empty * 1000:.1f} ms per account (median of 20)")
        rt.close()
        os.chdir(ROOT)
    if args.smoke:
        print("(smoke run: nothing measured)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
