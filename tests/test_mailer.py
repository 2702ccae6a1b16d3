"""erpq.mailer against a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import socket

import pytest

import smtp_fixtures
from erpq.config import MailSettings
from erpq.mailer import (
    Mailer,
    MailError,
    TemplateError,
    TransientMailError,
    build_message,
    check_template,
    message_id,
    render,
)
from smtp_fixtures import SmtpServer

smtp_server = smtp_fixtures.smtp_server
smtp_auth_server = smtp_fixtures.smtp_auth_server
smtp_down_port = smtp_fixtures.smtp_down_port
smtp_cert = smtp_fixtures.smtp_cert

PASSWORD = "s3cret-Pa55"


def plain(server: SmtpServer, **kw) -> Mailer:
    return Mailer("127.0.0.1", server.port, timeout_s=10, **kw)


def simple(to="ann@example.com", subject="Hi", n=0) -> object:
    return build_message("erpq@example.com", to, subject, f"body {n}")


# --------------------------------------------------------------------------- sending


def test_text_html_and_attachment_arrive_intact(smtp_server):
    pdf = bytes(range(256)) * 40
    mid = message_id("report", 7, "ann@example.com", domain="crm.example")
    msg = build_message(
        "Reports <reports@example.com>", ["ann@example.com"], "Monthly report – Ümlaut",
        "Hello Ann,\nyour report.\n", html="<p>Hello <b>Ann</b></p>", message_id=mid,
        headers={"X-Erpq-Tenant": "acme"}, attachments=[("report.pdf", pdf, "application/pdf")],
        cc=["bob@example.com"])
    refused = plain(smtp_server).send(msg)
    assert refused == {}

    got = smtp_server.wait_for(1)[0]
    assert got.mail_from == "erpq@localhost"  # envelope sender = mailer's from_address
    assert sorted(got.rcpt_tos) == ["ann@example.com", "bob@example.com"]
    m = got.message
    assert m["Subject"] == "Monthly report – Ümlaut"
    assert m["Message-ID"] == mid
    assert m["X-Erpq-Tenant"] == "acme"
    assert m.get_content_type() == "multipart/mixed"
    assert m.get_body(("plain",)).get_content() == "Hello Ann,\nyour report.\n"
    assert m.get_body(("html",)).get_content().strip() == "<p>Hello <b>Ann</b></p>"
    atts = list(m.iter_attachments())
    assert [a.get_filename() for a in atts] == ["report.pdf"]
    assert atts[0].get_content_type() == "application/pdf"
    assert atts[0].get_content() == pdf


def test_fifty_messages_over_one_connection(smtp_server):
    mailer = plain(smtp_server)
    with mailer.connect() as conn:
        for i in range(50):
            assert conn.send(simple(to=f"u{i}@example.com", n=i)) == {}
    got = smtp_server.wait_for(50)
    assert len(got) == 50
    assert smtp_server.connections == 1
    assert conn.connections == 1
    assert sorted(g.rcpt_tos[0] for g in got) == sorted(f"u{i}@example.com" for i in range(50))


def test_reconnects_once_when_server_dropped_the_connection(smtp_server):
    with plain(smtp_server).connect() as conn:
        conn.send(simple(n=1))
        smtp_server.drop_connections()
        conn.send(simple(n=2))
        assert conn.connections == 2
    got = smtp_server.wait_for(2)
    assert [g.message.get_content().strip() for g in got] == ["body 1", "body 2"]
    assert smtp_server.connections == 2


def test_from_settings():
    m = Mailer.from_settings(MailSettings(smtp_host="mx.local", smtp_port=2525, username="u",
                                          password=PASSWORD, starttls=True,
                                          from_address="crm@example.com"))
    assert (m.host, m.port, m.security, m.username, m.from_address) == (
        "mx.local", 2525, "starttls", "u", "crm@example.com")
    assert PASSWORD not in repr(m)
    assert Mailer.from_settings(MailSettings()).security == "none"
    with pytest.raises(ValueError):
        Mailer("h", 25, security="ssl")


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_modes_with_auth(smtp_cert, security):
    server = SmtpServer().start(auth=("erpq", PASSWORD), tls=security, cert=smtp_cert)
    try:
        mailer = plain(server, security=security, username="erpq", password=PASSWORD,
                       ssl_context=server.client_context())
        with mailer.connect() as conn:
            conn.send(simple(n=1))
            conn.send(simple(n=2))
        assert len(server.wait_for(2)) == 2
        assert server.connections == 1

        # The default context does not trust a self-signed certificate: permanent.
        with pytest.raises(MailError) as e:
            plain(server, security=security, username="erpq", password=PASSWORD).send(simple())
        assert not isinstance(e.value, TransientMailError)
        assert "certificate" in str(e.value)
        _assert_no_secret(e.value, PASSWORD)
    finally:
        server.stop()


def test_plain_client_against_starttls_required_server_is_refused(smtp_cert):
    server = SmtpServer().start(tls="starttls", cert=smtp_cert)
    try:
        with pytest.raises(MailError) as e:
            plain(server).send(simple())
        assert e.value.smtp_code == 530
        assert server.messages == []
    finally:
        server.stop()


# --------------------------------------------------------------------------- AUTH


def test_auth_login_once_per_connection(smtp_auth_server):
    mailer = plain(smtp_auth_server, username="erpq", password=PASSWORD)
    with mailer.connect() as conn:
        for i in range(3):
            conn.send(simple(n=i))
    assert len(smtp_auth_server.wait_for(3)) == 3
    assert smtp_auth_server.auth_attempts == 1


def test_auth_required_and_wrong_password_is_permanent_and_scrubbed(smtp_auth_server):
    with pytest.raises(MailError) as no_auth:
        plain(smtp_auth_server).send(simple())
    assert no_auth.value.smtp_code == 530
    assert not isinstance(no_auth.value, TransientMailError)

    wrong = "wrong-" + PASSWORD
    with pytest.raises(MailError) as bad:
        plain(smtp_auth_server, username="erpq", password=wrong).send(simple())
    err = bad.value
    assert not isinstance(err, TransientMailError)
    assert err.smtp_code == 535
    _assert_no_secret(err, wrong)
    assert smtp_auth_server.messages == []


# --------------------------------------------------------------------------- errors


def test_451_is_transient_550_is_permanent(smtp_server):
    smtp_server.reply_for["later@example.com"] = "451 4.7.1 try later"
    smtp_server.reply_for["nobody@example.com"] = "550 5.1.1 no such user"
    mailer = plain(smtp_server)

    with pytest.raises(TransientMailError) as t:
        mailer.send(simple(to="later@example.com"))
    assert t.value.smtp_code == 451
    assert t.value.smtp_text == "4.7.1 try later"
    assert t.value.refused == {"later@example.com": (451, "4.7.1 try later")}

    with pytest.raises(MailError) as p:
        mailer.send(simple(to="nobody@example.com"))
    assert not isinstance(p.value, TransientMailError)
    assert (p.value.smtp_code, p.value.smtp_text) == (550, "5.1.1 no such user")
    assert "550 5.1.1 no such user" in str(p.value)
    assert smtp_server.attempts["later@example.com"] == 1
    assert smtp_server.attempts["nobody@example.com"] == 1


def test_partial_refusal_returns_refused_and_connection_stays_usable(smtp_server):
    smtp_server.reply_for["nobody@example.com"] = "550 5.1.1 no such user"
    with plain(smtp_server).connect() as conn:
        refused = conn.send(simple(to=["ann@example.com", "nobody@example.com"]))
        assert refused == {"nobody@example.com": (550, "5.1.1 no such user")}
        with pytest.raises(MailError):
            conn.send(simple(to="nobody@example.com"))
        assert conn.send(simple(to="bob@example.com", n=3)) == {}
        assert conn.connections == 1
    got = smtp_server.wait_for(2)
    assert [g.rcpt_tos for g in got] == [["ann@example.com"], ["bob@example.com"]]


def test_data_refused(smtp_server):
    smtp_server.data_reply = "554 5.6.0 content rejected"
    with pytest.raises(MailError) as p:
        plain(smtp_server).send(simple())
    assert (p.value.smtp_code, p.value.transient) == (554, False)
    smtp_server.data_reply = "452 4.3.1 out of storage"
    with pytest.raises(TransientMailError):
        plain(smtp_server).send(simple())


def test_server_down_is_transient(smtp_down_port):
    mailer = Mailer("127.0.0.1", smtp_down_port, username="erpq", password=PASSWORD, timeout_s=5)
    with pytest.raises(TransientMailError) as t:
        mailer.send(simple())
    _assert_no_secret(t.value, PASSWORD)


def test_silent_server_times_out_as_transient():
    with socket.socket() as listener:  # accepts (backlog) but never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(TransientMailError, match="timed out"):
            Mailer("127.0.0.1", port, timeout_s=0.3).send(simple())


def test_starttls_not_offered_is_permanent(smtp_server):
    with pytest.raises(MailError, match="STARTTLS") as p:
        plain(smtp_server, security="starttls").send(simple())
    assert not isinstance(p.value, TransientMailError)


def _assert_no_secret(err: BaseException, secret: str) -> None:
    seen: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    for e in seen:
        text = f"{e} {e.args!r} {getattr(e, 'smtp_text', '')}"
        assert secret not in text


# --------------------------------------------------------------------------- messages


def test_header_injection_refused():
    for kw in (dict(subject="Hi\r\nBcc: evil@example.com"), dict(to="a@example.com\nBcc: e@x"),
               dict(headers={"X-A": "v\r\nBcc: e@x"}), dict(message_id="<a@b>\nX: y"),
               dict(attachments=[("a\r\n.txt", b"x", "text/plain")]), dict(cc=["c@x\rBcc: e"])):
        args = dict(from_addr="a@example.com", to="b@example.com", subject="s", text="t")
        args.update(kw)
        with pytest.raises(MailError, match="injection"):
            build_message(**args)
    with pytest.raises(MailError):
        build_message("a@example.com", "b@example.com", "s", "t", headers={"Bad Name": "v"})


def test_message_id_is_deterministic():
    a = message_id("reminder", 42, "Ann@Example.com")
    assert a == message_id("reminder", 42, "ann@example.com")
    assert a.startswith("<reminder.42.") and a.endswith("@erpq.localhost>")
    assert a != message_id("reminder", 43, "ann@example.com")
    assert a != message_id("reminder", 42, "bob@example.com")
    assert a != message_id("campaign", 42, "ann@example.com")
    assert message_id("x y", "a/b", "r", domain="crm.example").endswith("@crm.example>")
    with pytest.raises(ValueError):
        message_id("p", 1, "r", domain="evil>\r\n")


# --------------------------------------------------------------------------- templates


def test_render_text_and_html():
    assert render("Hi {{ name }}!", {"name": "<Ann>"}) == "Hi <Ann>!"
    assert render("Hi {{ name }}!", {"name": "<Ann>"}, html=True) == "Hi &lt;Ann&gt;!"
    assert render("Hi {{ missing }}!", {}) == "Hi !"
    with pytest.raises(TemplateError):
        render("Hi {{ missing }}!", {}, strict=True)
    assert render("{% for d in deals %}{{ d.name }} {% endfor %}",
                  {"deals": [{"name": "A"}, {"name": "B"}]}) == "A B "


@pytest.mark.parametrize("tpl", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ obj.__init__.__globals__ }}",
    "{{ deals.append(1) }}",
])
def test_sandbox_refuses_unsafe_access(tpl):
    with pytest.raises(TemplateError) as e:
        render(tpl, {"obj": object(), "deals": []})
    assert isinstance(e.value, ValueError)


def test_check_template_reports_line():
    check_template("ok {{ a }}\n{% if b %}x{% endif %}")
    with pytest.raises(TemplateError) as e:
        check_template("line one\nline two\n{% if x %}\nno endif\n")
    assert str(e.value).startswith("line 3: ")  # the unclosed block
    assert e.value.lineno == 3
    with pytest.raises(TemplateError, match=r"^line 2: "):
        check_template("fine\n{{ a + }}\n")
    with pytest.raises(TemplateError, match=r"^line 2: "):
        render("a\n{{ x.y.z }}", {}, strict=False)


def test_before_data_hook_runs_after_the_envelope_and_flags_uncertain(smtp_server):
    from erpq.mailer import Mailer, MailError, build_message

    calls: list[str] = []
    m = Mailer(smtp_server.host, smtp_server.port, from_address="a@example.com")
    smtp_server.reply_for["no@example.com"] = "550 5.1.1 no such user"

    async def drop(smtp, envelope):
        if envelope.rcpt_tos == ["drop@example.com"]:
            smtp.transport.close()
        return None

    smtp_server.data_hook = drop
    with m.connect() as conn:
        conn.send(build_message("a@example.com", "ok@example.com", "s", "t"), before_data=lambda: calls.append("ok"))
        with pytest.raises(MailError) as refused:
            conn.send(build_message("a@example.com", "no@example.com", "s", "t"),
                      before_data=lambda: calls.append("no"))
        assert not refused.value.uncertain
        with pytest.raises(MailError) as lost:
            conn.send(build_message("a@example.com", "drop@example.com", "s", "t"),
                      before_data=lambda: calls.append("drop"))
        assert lost.value.uncertain and lost.value.transient
        with pytest.raises(ZeroDivisionError):  # the hook's own failure propagates, nothing sent
            conn.send(build_message("a@example.com", "hook@example.com", "s", "t"), before_data=lambda: 1 / 0)
        conn.send(build_message("a@example.com", "ok2@example.com", "s", "t"))  # reconnects, no hook
    assert calls == ["ok", "drop"]
    # the server kept the dropped one: exactly why the sender cannot know (uncertain)
    assert sorted(r for x in smtp_server.messages for r in x.rcpt_tos) == [
        "drop@example.com", "ok2@example.com", "ok@example.com"]
