"""A throwaway Dovecot IMAP server (its own config, users and maildirs on a free
loopback port), per /work/shared/notes/dovecot-for-tests.md."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from conftest import free_port, need, port_open
from polling import wait_until

CONF = """protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovenull
default_login_user = dovenull
first_valid_uid = {uid}
namespace inbox {{
  inbox = yes
  separator = /
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=dovenull gid=nogroup home={d}/home/%u
}}
mail_location = maildir:~/Maildir
"""


class Dovecot:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="erpq-dovecot-"))
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.users: dict[str, str] = {}
        uid = subprocess.run(["id", "-u", "dovenull"], capture_output=True, text=True, check=True).stdout.strip()
        (self.dir / "home").mkdir()
        (self.dir / "dovecot.conf").write_text(CONF.format(d=self.dir, uid=uid, port=self.port))
        (self.dir / "passwd").write_text("")
        os.chmod(self.dir / "passwd", 0o644)

    def add_user(self, name: str, password: str) -> None:
        self.users[name] = password
        (self.dir / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        home = self.dir / "home" / name
        home.mkdir(exist_ok=True)
        subprocess.run(["chown", "-R", "dovenull:nogroup", str(self.dir / "home")], check=True)

    def start(self) -> None:
        with open(self.dir / "stderr.log", "ab") as err:
            subprocess.run(["dovecot", "-c", str(self.dir / "dovecot.conf")], stdout=subprocess.DEVNULL,
                           stderr=err, check=True)
        wait_until(lambda: port_open(self.host, self.port), timeout=15, message="dovecot listening")
        wait_until((self.dir / "run" / "master.pid").exists, timeout=15, message="dovecot pid file")

    def stop(self) -> None:
        pidfile = self.dir / "run" / "master.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text().split()[0])
        import psutil

        try:  # its children too: imap processes of open sessions outlive the master otherwise
            children = psutil.Process(pid).children(recursive=True)
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, psutil.NoSuchProcess):
            return
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass

        def gone() -> bool:
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                return True

        wait_until(gone, timeout=15, message="dovecot stopped")
        wait_until(lambda: not port_open(self.host, self.port), timeout=10, message="port closed")

    def mailbox(self, user: str):
        from imap_tools import MailBoxUnencrypted

        return MailBoxUnencrypted(self.host, self.port).login(user, self.users[user], initial_folder=None)

    def append(self, user: str, messages: list, folder: str = "INBOX") -> None:
        with self.mailbox(user) as mb:
            if not mb.folder.exists(folder):
                mb.folder.create(folder)
            for m in messages:
                data = m if isinstance(m, bytes) else m.as_bytes()
                mb.client.append(folder, None, None, data)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def make_message(i: int, sender: str = "sender@example.com", to: str = "alice@example.com",
                 subject: str | None = None, body: str | None = None, message_id: bool = True) -> EmailMessage:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject or f"Message {i}"
    m["Date"] = "Mon, 30 Nov 2026 10:00:00 +0000"
    if message_id:
        m["Message-ID"] = f"<msg-{i}-{to}@example.com>"
    m.set_content(body or f"Body of message {i}\n")
    return m


@pytest.fixture
def dovecot():
    need("dovecot", shutil.which("dovecot") is not None, "apt-get install dovecot-imapd")
    d = Dovecot()
    d.start()
    time.sleep(0)  # started; the fixture owns the process from here
    yield d
    d.cleanup()
