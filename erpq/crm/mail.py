"""Sending a mail at most once per Message-ID, through the shared ``erpq.mailer``.

The Message-ID is deterministic (purpose, record, recipient), and a row in
``crm_sent_mail`` is written once SMTP accepted it: a retried or recovered job
finds the row and does not send again. The one window left (the process dies
between the server's acceptance and that row) can only repeat a message with
the same Message-ID, which mail clients show once.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .. import mailer
from .models import SentMail

log = logging.getLogger("erpq.crm.mail")


def mailer_for(rt: Any) -> mailer.Mailer:
    return mailer.Mailer.from_settings(rt.settings.mail)


def already_sent(s: Any, mid: str) -> bool:
    return s.scalar(sa.select(SentMail.message_id).where(SentMail.message_id == mid)) is not None


def send_once(rt: Any, tenant_id: int, purpose: str, record_key: str, to: str, subject: str, text: str,
              html: str | None = None) -> bool:
    """Send unless this (purpose, record, recipient) was sent; True when sent now.

    Raises ``mailer.TransientMailError`` (retry) or ``mailer.MailError``.
    """
    settings = rt.settings
    mid = mailer.message_id(purpose, record_key, to, settings.crm.mail_domain)
    with rt.read_session() as s:
        if already_sent(s, mid):
            return False
    msg = mailer.build_message(settings.mail.from_address, to, subject, text, html=html, message_id=mid)
    mailer_for(rt).send(msg)
    try:
        with rt.session() as s:
            s.add(SentMail(message_id=mid, tenant_id=tenant_id, purpose=purpose[:64], recipient=to[:255],
                           subject=subject[:255]))
    except IntegrityError:  # a racing job sent it too: same Message-ID, shown once
        log.info("mail %s was sent twice by racing jobs", mid)
    log.info("Sent %s mail to %s (%s)", purpose, to, mid)
    return True
