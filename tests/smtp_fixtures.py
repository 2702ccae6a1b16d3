"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 and a free port.

Use it from any test module:

    import smtp_fixtures
    smtp_server = smtp_fixtures.smtp_server        # as tests/test_webhooks_*.py do
    smtp_down_port = smtp_fixtures.smtp_down_port

(``tests.smtp_fixtures`` works too when the project root is on sys.path.)

    def test_x(smtp_server):
        Mailer("127.0.0.1", smtp_server.port).send(msg)
        got = smtp_server.wait_for(1)[0]          # ReceivedMessage
        got.mail_from, got.rcpt_tos, got.message["Subject"]
        smtp_server.reply_for["x@y"] = "451 4.7.1 try later"  # or "550 5.1.1 no such user"
        smtp_server.attempts["x@y"]               # RCPT attempts for that address
        smtp_server.connections                   # connections accepted so far
        smtp_server.drop_connections()            # server hangs up on every client
        smtp_server.data_hook = hook              # async hook(smtp, envelope) at DATA

For AUTH: ``smtp_server.start(auth=("user", "secret"))`` restarts it requiring
AUTH PLAIN/LOGIN with that login (over plain text; ``auth_require_tls=False``),
or use the ``smtp_auth_server`` fixture.
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from polling import wait_until

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI): (cert, key)."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.server.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.server._lock:
            self.server.attempts[address] += 1
            reply = self.server.reply_for.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        hook = self.server.data_hook
        if hook is not None:
            reply = await hook(server, envelope)
            if reply:
                return reply
        reply = self.server.data_reply
        if reply:
            return reply
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):  # pragma: no cover - decode_data=False gives bytes
            raw = raw.encode("utf-8")
        # Line endings as a mail reader sees them (the wire has CRLF).
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        with self.server._lock:
            self.server._messages.append(ReceivedMessage(
                mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                message=parsed, raw=raw))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


class _CountingSMTP(SMTP):
    def __init__(self, owner: SmtpServer, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def connection_made(self, transport) -> None:
        # STARTTLS calls connection_made again for the same TCP connection:
        # count TCP connections by the client's address.
        peer = transport.get_extra_info("peername")
        with self._owner._lock:
            if peer not in self._owner._peers:
                self._owner._peers.add(peer)
                self._owner.connections += 1
            self._owner._transports.add(transport)
        self._counted_transport = transport
        super().connection_made(transport)

    def connection_lost(self, error) -> None:
        with self._owner._lock:
            self._owner._transports.discard(self._counted_transport)
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, owner: SmtpServer, *args, **kwargs) -> None:
        self._owner = owner
        super().__init__(*args, **kwargs)

    def factory(self):
        return _CountingSMTP(self._owner, self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """A running aiosmtpd server plus what it received."""

    def __init__(self) -> None:
        self.host = HOST
        self.port = 0
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._transports: set = set()
        self._peers: set = set()
        #: address -> full SMTP reply for RCPT TO, e.g. "550 5.1.1 no such user".
        self.reply_for: dict[str, str] = {}
        #: address -> RCPT TO attempts seen.
        self.attempts: Counter[str] = Counter()
        #: a reply for DATA instead of accepting (e.g. "554 5.6.0 rejected").
        self.data_reply: str | None = None
        #: ``async def hook(smtp, envelope) -> str | None`` awaited when DATA's content
        #: arrived, before it is accepted: may wait, drop the connection
        #: (``smtp.transport.close()``) or return a reply instead of accepting.
        self.data_hook = None
        self.connections = 0
        self.auth: tuple[str, str] | None = None
        self.auth_attempts = 0
        self.cert: tuple[Path, Path] | None = None
        self._controller: _Controller | None = None

    # -- lifecycle

    def start(self, auth: tuple[str, str] | None = None, tls: str = "none",
              cert: tuple[Path, Path] | None = None) -> SmtpServer:
        """(Re)start. ``tls="starttls"`` offers and requires STARTTLS, ``tls="tls"``
        is implicit TLS; both need ``cert`` (see :func:`make_cert`); the client
        trusts it with :meth:`client_context`."""
        self.stop()
        self.auth = auth
        kwargs: dict = {}
        if tls != "none":
            assert cert is not None, "TLS needs cert=make_cert(tmp_path)"
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(str(cert[0]), str(cert[1]))
            self.cert = cert
            if tls == "starttls":
                kwargs.update(tls_context=server_ctx, require_starttls=True)
            elif tls == "tls":
                kwargs.update(ssl_context=server_ctx)
            else:
                raise ValueError(f"tls must be none, starttls or tls, not {tls!r}")
        if auth is not None:
            # AUTH over plain text (127.0.0.1 only). "Required" is enforced in
            # handle_MAIL: aiosmtpd's auth_required=True warns without TLS.
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        last: Exception | None = None
        for _ in range(5):  # the free port may be taken between probing and binding
            port = _free_port()
            controller = _Controller(self, _Handler(self), hostname=HOST, port=port,
                                     ready_timeout=10.0, **kwargs)
            try:
                controller.start()
            except Exception as exc:  # pragma: no cover - port race
                last = exc
                continue
            self._controller, self.port = controller, port
            # Controller.start() connects once itself to check the server is up:
            # that connection is not one of the test's.
            wait_until(lambda: not self._open_transports(), timeout=5,
                       message="the readiness probe connection to close")
            with self._lock:
                self.connections = 0
            return self
        raise RuntimeError(f"could not start the SMTP test server: {last}")  # pragma: no cover

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def client_context(self) -> ssl.SSLContext:
        """An SSL context trusting this server's certificate."""
        return ssl.create_default_context(cafile=str(self.cert[0]))

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        with self._lock:
            self.auth_attempts += 1
        ok = (
            self.auth is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login.decode("utf-8", "replace") == self.auth[0]
            and auth_data.password.decode("utf-8", "replace") == self.auth[1]
        )
        return AuthResult(success=ok, handled=False)

    # -- what happened

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of the messages received so far."""
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages arrived; return them."""
        return wait_until(lambda: len(self.messages) >= count and self.messages, timeout=timeout,
                          message=f"{count} message(s) on the SMTP test server")

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self.attempts.clear()

    def drop_connections(self) -> None:
        """Hang up on every connected client (as a server restart or idle timeout would)."""
        controller = self._controller
        assert controller is not None, "server not running"
        with self._lock:
            transports = list(self._transports)
        done = threading.Event()

        def close_all() -> None:
            for transport in transports:
                transport.close()
            done.set()

        controller.loop.call_soon_threadsafe(close_all)
        assert done.wait(5), "could not drop the SMTP connections"
        wait_until(lambda: not self._open_transports(), timeout=5,
                   message="SMTP connections closed")

    def _open_transports(self) -> int:
        with self._lock:
            return len(self._transports)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A running SMTP server on 127.0.0.1 (no AUTH); see the module docstring."""
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_auth_server() -> Iterator[SmtpServer]:
    """Like ``smtp_server`` but requiring AUTH as ``erpq`` / ``s3cret-Pa55``."""
    server = SmtpServer().start(auth=("erpq", "s3cret-Pa55"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smtp_cert(tmp_path_factory) -> tuple[Path, Path]:
    """(cert, key) of a self-signed certificate for 127.0.0.1."""
    return make_cert(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_down_port() -> int:
    """A port on 127.0.0.1 with nothing listening."""
    return _free_port()


__all__ = ["ReceivedMessage", "SmtpServer", "make_cert", "smtp_auth_server", "smtp_cert",
           "smtp_down_port", "smtp_server"]
