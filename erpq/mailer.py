"""The one SMTP sender: reminders, workflows, report export and campaigns all use it.

    mailer = Mailer.from_settings(rt.settings.mail)
    msg = build_message(mailer.from_address, "ann@example.com", "Hello",
                        text=render(tpl_text, ctx), html=render(tpl_html, ctx, html=True),
                        message_id=message_id("reminder", activity_id, "ann@example.com"))
    with mailer.connect() as conn:          # one SMTP connection, one login
        refused = conn.send(msg)            # {recipient: (code, text)} for refused ones
    mailer.send(msg)                        # one-off

Errors tell a job whether to retry: :class:`TransientMailError` (4xx answers,
connection refused/reset/dropped, timeouts) is worth retrying; a plain
:class:`MailError` (5xx answers, authentication or TLS configuration problems)
is not. Neither ever contains the SMTP password.

``message_id()`` is deterministic, so a job re-run after a crash sends a
message with the same Message-ID as the first attempt and the receiving side
(or a sent-mail log) can recognise the duplicate.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from types import TracebackType
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "MailConnection",
    "MailError",
    "Mailer",
    "TemplateError",
    "TransientMailError",
    "build_message",
    "check_template",
    "message_id",
    "render",
]

SECURITY_MODES = ("none", "starttls", "tls")

# --------------------------------------------------------------------------- errors


class MailError(Exception):
    """Sending failed for good (5xx answer, authentication/TLS/configuration problem).

    ``smtp_code``/``smtp_text`` hold the server's answer when there was one;
    ``refused`` maps each refused recipient to ``(code, text)`` when the
    failure was recipients being refused.
    """

    transient = False
    #: True when the message data went out and no answer came back (dropped
    #: connection or timeout after DATA): the server may have accepted it.
    uncertain = False

    def __init__(self, message: str, smtp_code: int | None = None, smtp_text: str = "",
                 refused: Mapping[str, tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.smtp_code = smtp_code
        self.smtp_text = smtp_text
        self.refused: dict[str, tuple[int, str]] = dict(refused or {})


class TransientMailError(MailError):
    """Sending failed for now (4xx answer, connection refused/reset/dropped, timeout): retry later."""

    transient = True


class TemplateError(ValueError):
    """A template does not compile or render; the message starts with ``line N:`` when known."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


# --------------------------------------------------------------------------- secrets


def _secret_forms(username: str, password: str) -> list[str]:
    """The password and the encodings of it that AUTH puts on the wire."""
    if not password:
        return []
    forms = {password}
    for raw in (f"\0{username}\0{password}", password):
        try:
            forms.add(base64.b64encode(raw.encode("utf-8")).decode("ascii"))
        except UnicodeEncodeError:  # pragma: no cover - lone surrogates
            pass
    return sorted(forms, key=len, reverse=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _error_for(code: int | None, message: str, text: str = "",
               refused: Mapping[str, tuple[int, str]] | None = None,
               transient: bool | None = None) -> MailError:
    if transient is None:
        transient = code is not None and 400 <= code < 500
    cls = TransientMailError if transient else MailError
    return cls(message, smtp_code=code, smtp_text=text, refused=refused)


def _classify(exc: BaseException, where: str, secrets: Sequence[str]) -> MailError:
    """Turn an smtplib/socket exception into MailError / TransientMailError (password scrubbed)."""

    def s(text: str) -> str:
        return _scrub(text, secrets)

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = {rcpt: (int(code), s(_decode(text))) for rcpt, (code, text) in exc.recipients.items()}
        any_transient = any(400 <= code < 500 for code, _ in refused.values())
        detail = "; ".join(f"{rcpt}: {code} {text}" for rcpt, (code, text) in refused.items())
        first_code, first_text = next(iter(refused.values()), (None, ""))
        # Retry if any recipient may be accepted later; the permanent ones stay
        # in ``refused`` so the caller can drop them from the retry.
        return _error_for(first_code, f"{where}: all recipients refused: {detail}", first_text,
                          refused=refused, transient=any_transient)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        text = s(_decode(exc.smtp_error))
        return _error_for(exc.smtp_code, f"{where}: authentication failed: {exc.smtp_code} {text}",
                          text)
    if isinstance(exc, smtplib.SMTPResponseException):  # sender refused, data, helo, connect
        text = s(_decode(exc.smtp_error))
        if isinstance(exc, smtplib.SMTPSenderRefused):
            what = f"sender {exc.sender} refused"
        elif isinstance(exc, smtplib.SMTPDataError):
            what = "message refused"
        elif isinstance(exc, smtplib.SMTPConnectError):
            what = "connection refused by server"
        elif isinstance(exc, smtplib.SMTPHeloError):
            what = "HELO refused"
        else:
            what = "server answered"
        code = exc.smtp_code if isinstance(exc.smtp_code, int) else None
        transient = None
        if code is None or code < 400:  # -1 etc.: a garbled answer, try again later
            transient = True
        return _error_for(code, f"{where}: {what}: {exc.smtp_code} {text}", text, transient=transient)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientMailError(s(f"{where}: connection lost: {exc}"))
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return MailError(s(f"{where}: not supported by the server: {exc}"))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailError(s(f"{where}: TLS certificate verification failed: {exc}"))
    if isinstance(exc, ssl.SSLError):
        return MailError(s(f"{where}: TLS failed: {exc}"))
    if isinstance(exc, TimeoutError | socket.timeout):
        return TransientMailError(s(f"{where}: timed out"))
    if isinstance(exc, socket.gaierror):
        return TransientMailError(s(f"{where}: cannot resolve host: {exc}"))
    if isinstance(exc, OSError):
        return TransientMailError(s(f"{where}: {exc.strerror or exc}"))
    if isinstance(exc, smtplib.SMTPException):
        return MailError(s(f"{where}: {exc}"))
    return MailError(s(f"{where}: {type(exc).__name__}: {exc}"))


_RETRYABLE_DROP = (smtplib.SMTPServerDisconnected, ConnectionResetError, BrokenPipeError,
                   ConnectionAbortedError)


def _is_drop(exc: BaseException) -> bool:
    """Did the server go away (rather than refuse this message)?"""
    if isinstance(exc, _RETRYABLE_DROP):
        return True
    # 421 = "service not available, closing channel" (e.g. an idle timeout):
    # smtplib closes the socket itself.
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 421 \
        and not isinstance(exc, smtplib.SMTPRecipientsRefused)


# --------------------------------------------------------------------------- sender


class Mailer:
    """SMTP settings plus :meth:`connect` (reused connection) and :meth:`send` (one-off)."""

    def __init__(self, host: str, port: int, security: str = "none", username: str = "",
                 password: str = "", timeout_s: float = 30.0,
                 from_address: str = "erpq@localhost", local_hostname: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        _check_header("from_address", from_address)
        self.host = host
        self.port = int(port)
        self.security = security
        self.username = username
        self._password = password
        self.timeout_s = float(timeout_s)
        self.from_address = from_address
        self.local_hostname = local_hostname
        self.ssl_context = ssl_context
        self._secrets = _secret_forms(username, password)

    @classmethod
    def from_settings(cls, mail_settings: Any, **overrides: Any) -> Mailer:
        """From ``erpq.config.MailSettings`` (``starttls=True`` means ``security="starttls"``)."""
        kwargs: dict[str, Any] = dict(
            host=mail_settings.smtp_host,
            port=mail_settings.smtp_port,
            security="starttls" if getattr(mail_settings, "starttls", False) else "none",
            username=getattr(mail_settings, "username", "") or "",
            password=getattr(mail_settings, "password", "") or "",
            from_address=getattr(mail_settings, "from_address", "erpq@localhost"),
        )
        security = getattr(mail_settings, "security", None)  # a future setting, if ever added
        if isinstance(security, str) and security:
            kwargs["security"] = security
        timeout = getattr(mail_settings, "timeout_s", None)
        if isinstance(timeout, int | float) and timeout > 0:
            kwargs["timeout_s"] = float(timeout)
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:  # never the password
        user = f" user={self.username!r}" if self.username else ""
        return f"<Mailer {self.host}:{self.port} security={self.security}{user}>"

    def connect(self) -> MailConnection:
        """A connection for a batch: ``with mailer.connect() as conn: conn.send(msg)``.

        The SMTP connection is opened (and logged in) on entering the block.
        """
        return MailConnection(self)

    def send(self, msg: EmailMessage, *, from_addr: str | None = None,
             to_addrs: Sequence[str] | None = None) -> dict[str, tuple[int, str]]:
        """Send one message over a connection of its own; see :meth:`MailConnection.send`."""
        with self.connect() as conn:
            return conn.send(msg, from_addr=from_addr, to_addrs=to_addrs)

    # -- internals used by MailConnection

    def _error(self, exc: BaseException, where: str) -> MailError:
        return _classify(exc, where, self._secrets)

    def _open(self) -> smtplib.SMTP:
        where = f"SMTP {self.host}:{self.port}"
        smtp: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                        timeout=self.timeout_s,
                                        context=self.ssl_context or ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname,
                                    timeout=self.timeout_s)
            smtp.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise MailError(f"{where}: the server does not offer STARTTLS")
                smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self._password)
            return smtp
        except BaseException as exc:
            if smtp is not None:
                smtp.close()
            if isinstance(exc, MailError):
                raise
            if not isinstance(exc, Exception):
                raise
            err = self._error(exc, where)
            raise err from (None if self._leaks(exc) else exc)

    def _leaks(self, exc: BaseException) -> bool:
        text = f"{exc} {exc.args!r}"
        return any(secret and secret in text for secret in self._secrets)


class MailConnection:
    """One SMTP connection reused for many messages (context manager from :meth:`Mailer.connect`).

    Not thread-safe: one per thread/job.
    """

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer
        self._smtp: smtplib.SMTP | None = None
        #: Messages sent on the current SMTP connection.
        self.sent_on_connection = 0
        #: SMTP connections opened so far (2 after a reconnect).
        self.connections = 0

    def __enter__(self) -> MailConnection:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        if self._smtp is None:
            self._smtp = self.mailer._open()
            self.connections += 1
            self.sent_on_connection = 0

    def close(self) -> None:
        """QUIT politely; a server that already went away is fine."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def send(self, msg: EmailMessage, *, from_addr: str | None = None,
             to_addrs: Sequence[str] | None = None,
             before_data: Callable[[], None] | None = None) -> dict[str, tuple[int, str]]:
        """Send ``msg``; return ``{recipient: (code, text)}`` for recipients the server refused
        while accepting others (empty when all were accepted).

        The envelope sender is ``from_addr`` or the mailer's ``from_address``;
        recipients default to To/Cc/Bcc (Bcc is not transmitted). Raises
        :class:`TransientMailError` / :class:`MailError`; when every recipient
        is refused, ``err.refused`` has each one's answer.

        If the server dropped the connection since the previous message (or
        answered 421), reconnects once and sends again.

        ``before_data`` is called once the server accepted the envelope (MAIL
        FROM and RCPT TO), right before DATA: a failure before it means the
        message was certainly not delivered. An error raised after it without
        a reply from the server has ``uncertain=True`` (never retried here);
        an exception raised by ``before_data`` itself propagates unchanged.
        """
        if not isinstance(msg, EmailMessage):
            raise TypeError("msg must be an email.message.EmailMessage (see build_message)")
        sender = from_addr or self.mailer.from_address
        _check_header("from_addr", sender)
        where = f"SMTP {self.mailer.host}:{self.mailer.port}"
        self.open()
        for attempt in (1, 2):
            assert self._smtp is not None
            smtp = self._smtp
            state = {"data": False, "hook_error": False}
            if before_data is not None:
                real_data = smtp.data

                def data(payload, _real=real_data, _state=state):
                    _state["hook_error"] = True
                    before_data()
                    _state["hook_error"], _state["data"] = False, True
                    return _real(payload)

                smtp.data = data  # type: ignore[method-assign]  # sendmail calls self.data
            try:
                refused = smtp.send_message(msg, from_addr=sender,
                                            to_addrs=list(to_addrs) if to_addrs else None)
            except Exception as exc:
                if state["hook_error"]:
                    self._drop()  # mid-transaction: the connection is not reusable
                    raise
                reused = self.sent_on_connection > 0
                if attempt == 1 and reused and _is_drop(exc) and not state["data"]:
                    self._drop()
                    self.open()
                    continue
                if isinstance(exc, smtplib.SMTPRecipientsRefused):
                    self._reset()
                elif not isinstance(exc, smtplib.SMTPResponseException) or _is_drop(exc):
                    self._drop()
                else:
                    self._reset()
                err = self.mailer._error(exc, where)
                err.uncertain = state["data"] and not isinstance(exc, smtplib.SMTPResponseException)
                raise err from (None if self.mailer._leaks(exc) else exc)
            finally:
                if before_data is not None:
                    smtp.__dict__.pop("data", None)
            self.sent_on_connection += 1
            return {rcpt: (int(code), _scrub(_decode(text), self.mailer._secrets))
                    for rcpt, (code, text) in refused.items()}
        raise AssertionError("unreachable")  # pragma: no cover

    def _reset(self) -> None:
        """After a refused message keep the connection usable for the next one."""
        if self._smtp is None or self._smtp.sock is None:
            self._smtp = None
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()


# --------------------------------------------------------------------------- messages

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII except ':' and space


def _check_header(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise MailError(f"{name}: header value must be a string, not {type(value).__name__}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise MailError(f"{name}: header value contains a line break (header injection refused)")


def _addresses(field: str, value: str | Iterable[str]) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        _check_header(field, item)
        if item.strip():
            out.append(item.strip())
    return out


def message_id(purpose: str, record_id: Any, recipient: str, domain: str = "erpq.localhost") -> str:
    """A deterministic Message-ID ``<purpose.record.hash@domain>`` for one (purpose, record, recipient).

    Sending the same thing again (a job re-run after a crash) yields the same id.
    """
    if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        raise ValueError(f"invalid Message-ID domain {domain!r}")
    digest = hashlib.sha256(
        f"{purpose}\0{record_id}\0{recipient.strip().lower()}".encode()).hexdigest()[:20]
    safe_purpose = re.sub(r"[^A-Za-z0-9_-]+", "-", str(purpose)).strip("-") or "mail"
    safe_record = re.sub(r"[^A-Za-z0-9_-]+", "-", str(record_id)).strip("-") or "0"
    return f"<{safe_purpose}.{safe_record}.{digest}@{domain}>"


def build_message(from_addr: str, to: str | Iterable[str], subject: str, text: str,
                  html: str | None = None, message_id: str | None = None,
                  headers: Mapping[str, str] | None = None,
                  attachments: Iterable[tuple[str, bytes, str]] = (),
                  cc: str | Iterable[str] = ()) -> EmailMessage:
    """An EmailMessage: text, or multipart/alternative text+HTML, plus attachments
    given as ``(filename, bytes, "type/subtype")``.

    Any CR/LF in a header value (addresses, subject, extra headers, filenames)
    raises :class:`MailError` rather than letting it inject headers.
    """
    _check_header("From", from_addr)
    _check_header("Subject", subject)
    to_list = _addresses("To", to)
    cc_list = _addresses("Cc", cc)
    if not to_list and not cc_list:
        raise MailError("no recipients")
    msg = EmailMessage()
    msg["From"] = from_addr
    if to_list:
        msg["To"] = ", ".join(to_list)
    if cc_list:
        msg["Cc"] = ", ".join(cc_list)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    if message_id is not None:
        _check_header("Message-ID", message_id)
        msg["Message-ID"] = message_id
    else:
        domain = _domain_of(from_addr)
        msg["Message-ID"] = make_msgid(domain=domain)
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.match(name):
            raise MailError(f"invalid header name {name!r}")
        if name.lower() in ("content-type", "content-transfer-encoding", "mime-version"):
            raise MailError(f"header {name} is set by build_message")
        _check_header(name, value)
        del msg[name]
        msg[name] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for item in attachments:
        filename, data, mimetype = item
        _check_header("attachment filename", filename)
        maintype, _, subtype = (mimetype or "application/octet-stream").partition("/")
        if not maintype or not subtype or not _HEADER_NAME.match(mimetype.replace("/", "")):
            raise MailError(f"invalid attachment type {mimetype!r}")
        if isinstance(data, str):
            data = data.encode("utf-8")
        msg.add_attachment(bytes(data), maintype=maintype, subtype=subtype, filename=filename)
    return msg


def _domain_of(address: str) -> str:
    parsed = getaddresses([address])
    addr = parsed[0][1] if parsed else ""
    domain = addr.rpartition("@")[2] if "@" in addr else ""
    try:
        Address(addr_spec=addr)
    except (ValueError, IndexError):
        domain = ""
    return domain if re.fullmatch(r"[A-Za-z0-9.-]+", domain or "") else "erpq.localhost"


# --------------------------------------------------------------------------- templates


class _Sandbox(ImmutableSandboxedEnvironment):
    """Unsafe attribute access raises (the stock sandbox renders it as an empty Undefined)."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of "
                            f"{type(obj).__name__!r} object is unsafe")


@functools.cache
def _env(html: bool, strict: bool) -> _Sandbox:
    return _Sandbox(
        autoescape=html,
        undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )


@functools.lru_cache(maxsize=512)
def _compile(template_str: str, html: bool, strict: bool) -> jinja2.Template:
    try:
        return _env(html, strict).from_string(template_str)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}", exc.lineno) from None


def _template_line(exc: BaseException) -> int | None:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(template_str: str, context: Mapping[str, Any] | None = None, *, html: bool = False,
           strict: bool = False) -> str:
    """Render a Jinja2 template in a sandbox (compiled templates are cached).

    ``html=True`` autoescapes values; ``strict=True`` makes undefined names an
    error (by default they render empty). Raises :class:`TemplateError`.
    """
    template = _compile(template_str, html, strict)
    try:
        return template.render(dict(context or {}))
    except TemplateError:
        raise
    except Exception as exc:  # SecurityError, UndefinedError, TypeError inside the template...
        line = _template_line(exc)
        prefix = f"line {line}: " if line else ""
        kind = "refused by sandbox" if isinstance(exc, SecurityError) else type(exc).__name__
        raise TemplateError(f"{prefix}{kind}: {exc}", line) from None


def check_template(template_str: str, *, html: bool = False) -> None:
    """Raise :class:`TemplateError` ("line N: message") if the template does not compile."""
    _compile(template_str, html, False)
