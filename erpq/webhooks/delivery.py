"""Delivering one webhook: claim the row, sign, POST, record, schedule the retry.

Ownership ("never two jobs for one delivery at a time"): every enqueue of
``DeliverWebhookJob`` carries a fresh token, written to the delivery's
``job_id`` before the job is enqueued (and used as the Huey task id, so an
operator can match the two). A job works only on a row whose ``job_id`` is
its token, claiming it with one conditional UPDATE; a job whose token was
replaced (the retry task re-enqueued the delivery, an operator redelivered it)
finds nothing to claim and does nothing. The same job re-run after its runner
died (at-least-once) still owns the row and tries again, with the same
``webhook-id``: receivers dedupe on it.

Retries are not Huey retries: a failed attempt records ``next_retry_at`` from
the backoff schedule (or the receiver's ``Retry-After``) and enqueues the next
attempt with that exact ETA. ``erp:retry-webhook-deliveries`` is the safety net
for jobs lost in a crash (see ``requeue_stalled``).
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..config import WebhookSettings
from ..db import utcnow
from ..models import Webhook, WebhookDelivery
from ..runtime import current, job, periodic
from . import guard

log = logging.getLogger("erpq.webhooks")

JOB = "DeliverWebhookJob"
#: Statuses a job may (re)claim: pending, a failed attempt, or a run its runner died in.
CLAIMABLE = ("pending", "failed", "delivering")


# ---------------------------------------------------------------- signing


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of id.timestamp.body."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def body_of(event: str, payload: Any, created_at: dt.datetime) -> bytes:
    """The POST body: the Standard Webhooks envelope (type, timestamp, data).

    Built from stored columns only, so every attempt sends the same bytes.
    """
    envelope = {"type": event, "timestamp": created_at.isoformat().replace("+00:00", "Z"),
                "data": payload}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def new_token() -> str:
    return uuid.uuid4().hex


def max_attempts(ws: WebhookSettings) -> int:
    return len(ws.backoff_s) + 1


# ---------------------------------------------------------------- HTTP


@dataclass
class Attempt:
    """What one POST came to."""

    ok: bool
    code: int | None = None
    body: str | None = None
    error: str | None = None
    duration_ms: float = 0.0
    retry_after: float | None = None
    final: bool = False  # no point retrying (refused by the SSRF guard)


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def client() -> httpx.Client:
    """The process's pooled client, shared by every worker thread (httpx.Client is thread-safe).

    ``trust_env=False``: a proxy from the environment would resolve the host
    itself and defeat the SSRF guard's pinning.
    """
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = httpx.Client(
                    follow_redirects=False, trust_env=False,
                    limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
                )
    return _client


def close_client() -> None:
    global _client
    with _client_lock:
        if _client is not None:
            _client.close()
            _client = None


def post(http: httpx.Client, target: guard.Target, body: bytes, headers: dict[str, str],
         ws: WebhookSettings) -> Attempt:
    """POST ``body`` to the checked addresses of ``target``, in order, until one connects.

    The URL's host is replaced by the checked address (no second DNS lookup);
    the Host header and TLS SNI / certificate check keep the original name.
    The response body is streamed and reading stops at ``max_response_bytes``.
    """
    started = time.monotonic()
    headers = {**headers, "Host": target.host_header}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    error = "no address to connect to"
    for address in target.addresses:
        url = httpx.URL(target.url).copy_with(host=str(address))
        try:
            with http.stream("POST", url, content=body, headers=headers,
                             timeout=ws.timeout_s, extensions=extensions) as resp:
                text = _read_limited(resp, ws.max_response_bytes, started + ws.timeout_s)
                return _judge(resp, text, started)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            error = f"connection to {address} failed: {exc or type(exc).__name__}"
            continue  # try the next checked address
        except httpx.TimeoutException as exc:
            return Attempt(False, error=f"timeout after {ws.timeout_s:g}s ({type(exc).__name__})",
                           duration_ms=_ms(started))
        except httpx.HTTPError as exc:
            return Attempt(False, error=f"{type(exc).__name__}: {exc}", duration_ms=_ms(started))
    return Attempt(False, error=error, duration_ms=_ms(started))


def _read_limited(resp: httpx.Response, limit: int, deadline: float) -> str:
    """At most ``limit`` bytes of the body; the rest is never read (the connection is dropped)."""
    buf = bytearray()
    for chunk in resp.iter_raw():
        buf += chunk[: limit - len(buf)]
        if len(buf) >= limit or time.monotonic() > deadline:
            break
    return buf.decode("utf-8", errors="replace")


def _judge(resp: httpx.Response, text: str, started: float) -> Attempt:
    code = resp.status_code
    out = Attempt(200 <= code < 300, code=code, body=text, duration_ms=_ms(started))
    if out.ok:
        return out
    if 300 <= code < 400:
        out.error = f"HTTP {code} redirect to {resp.headers.get('location', '?')!r} not followed"
    else:
        out.error = f"HTTP {code} {resp.reason_phrase}".rstrip()
    if code in (429, 503):
        out.retry_after = parse_retry_after(resp.headers.get("retry-after"))
    return out


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - utcnow()).total_seconds())


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


# ---------------------------------------------------------------- claim and record


@dataclass(frozen=True)
class Claimed:
    id: int
    delivery_id: str
    tenant_id: int
    webhook_id: int
    url: str
    secret: str
    body: bytes
    attempts: int
    webhook_failures: int  # the subscription's failure count when claimed


#: Core tables: the hot path skips the ORM's unit of work (one delivery is a
#: handful of statements, and their cost decides throughput).
D = WebhookDelivery.__table__
W = Webhook.__table__
DB = Session | Connection


def claim(db: DB, delivery_pk: int, token: str, ws: WebhookSettings) -> Claimed | None:
    """Take the delivery for this attempt, or None when this job does not own it.

    Counts the attempt up front, so a delivery whose runner keeps dying still
    runs out of attempts. A delivery of a disabled subscription ends as dead.
    """
    taken = db.execute(
        D.update().where(D.c.id == delivery_pk, D.c.job_id == token, D.c.status.in_(CLAIMABLE))
        .values(status="delivering", attempts=D.c.attempts + 1, updated_at=utcnow())
    ).rowcount
    if taken != 1:
        return None
    row = db.execute(
        sa.select(D.c.delivery_id, D.c.tenant_id, D.c.webhook_id, D.c.event, D.c.payload, D.c.created_at,
                  D.c.attempts, D.c.error, W.c.url, W.c.secret, W.c.is_active, W.c.disabled_reason,
                  W.c.consecutive_failures)
        .select_from(D.outerjoin(W, W.c.id == D.c.webhook_id)).where(D.c.id == delivery_pk)
    ).one()
    if not row.is_active:
        why = row.disabled_reason or "deleted"
        _finish(db, delivery_pk, token, status="dead", error=f"subscription disabled: {why}",
                attempts=row.attempts - 1)
        return None
    if row.attempts > max_attempts(ws):
        _finish(db, delivery_pk, token, status="dead", error=f"{row.error or 'failed'} (out of attempts)")
        return None
    return Claimed(delivery_pk, row.delivery_id, row.tenant_id, row.webhook_id, row.url, row.secret,
                   body_of(row.event, row.payload, row.created_at), row.attempts, row.consecutive_failures)


@dataclass(frozen=True)
class Next:
    """What happens after an attempt: its final status, and the retry to enqueue, if any."""

    status: str
    token: str | None = None
    retry_at: dt.datetime | None = None


def record(db: DB, c: Claimed, token: str, a: Attempt, ws: WebhookSettings,
           rng: random.Random | None = None) -> Next:
    """Write the attempt's outcome; decide and write the retry (with a new token)."""
    now = utcnow()
    values: dict[str, Any] = {"response_code": a.code, "response_body": a.body,
                              "error": a.error, "duration_ms": a.duration_ms, "updated_at": now}
    if a.ok:
        nxt = Next("delivered")
        values.update(status="delivered", delivered_at=now, next_retry_at=None, job_id=None, error=None)
        if c.webhook_failures:
            db.execute(W.update().where(W.c.id == c.webhook_id)
                       .values(consecutive_failures=0, first_failure_at=None))
    else:
        gone = a.code == 410
        if gone or a.final or c.attempts >= max_attempts(ws):
            nxt = Next("dead")
        else:
            delay = backoff_delay(ws, c.attempts, a.retry_after, rng)
            nxt = Next("failed", new_token(), now + dt.timedelta(seconds=delay))
        values.update(status=nxt.status, next_retry_at=nxt.retry_at, job_id=nxt.token)
        if gone:
            disable(db, c.webhook_id, "receiver answered 410 Gone", now)
            values["error"] = f"{a.error}: subscription disabled"
        else:
            _count_failure(db, c.webhook_id, a.error or "failed", ws, now)
    done = db.execute(D.update().where(D.c.id == c.id, D.c.job_id == token).values(**values)).rowcount
    if done != 1:  # taken over meanwhile (redelivered by hand): its new owner decides
        return Next("superseded")
    return nxt


def backoff_delay(ws: WebhookSettings, attempts: int, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: the schedule plus jitter, never
    sooner than the receiver's ``Retry-After`` (capped at a day)."""
    base = ws.backoff_s[min(attempts, len(ws.backoff_s)) - 1]
    delay = base * (1 + (rng or random).uniform(0, ws.jitter))
    if retry_after is not None:
        delay = max(delay, min(retry_after, 86400.0))
    return delay


def _finish(db: DB, delivery_pk: int, token: str, *, status: str, error: str,
            attempts: int | None = None) -> None:
    values: dict[str, Any] = {"status": status, "error": error, "job_id": None,
                              "next_retry_at": None, "updated_at": utcnow()}
    if attempts is not None:
        values["attempts"] = attempts
    db.execute(D.update().where(D.c.id == delivery_pk, D.c.job_id == token).values(**values))


def _count_failure(db: DB, webhook_id: int, error: str, ws: WebhookSettings,
                   now: dt.datetime) -> None:
    """One more failed attempt in a row; disable after N of them spread over a period."""
    db.execute(W.update().where(W.c.id == webhook_id).values(
        consecutive_failures=W.c.consecutive_failures + 1,
        first_failure_at=sa.func.coalesce(W.c.first_failure_at, now)))
    hook = db.execute(sa.select(W.c.is_active, W.c.consecutive_failures, W.c.first_failure_at)
                      .where(W.c.id == webhook_id)).one()
    if not hook.is_active or hook.consecutive_failures < ws.disable_after_failures:
        return
    if (now - hook.first_failure_at).total_seconds() < ws.disable_after_s:
        return
    since = hook.first_failure_at.isoformat(timespec="seconds")
    disable(db, webhook_id, f"{hook.consecutive_failures} consecutive failed deliveries "
                            f"since {since}; last: {error}"[:512], now)


def disable(db: DB, webhook_id: int, reason: str, now: dt.datetime | None = None) -> None:
    """Turn a subscription off, keeping why and when for operators."""
    hit = db.execute(W.update().where(W.c.id == webhook_id, W.c.is_active.is_(True))
                     .values(is_active=False, disabled_at=now or utcnow(), disabled_reason=reason[:512]))
    if hit.rowcount:
        log.warning("Webhook %s disabled: %s", webhook_id, reason)


# ---------------------------------------------------------------- one delivery, end to end


def attempt(c: Claimed, ws: WebhookSettings, http: httpx.Client | None = None,
            resolve: guard.Resolver = guard.system_resolver) -> Attempt:
    """Check the URL with the SSRF guard, then sign and POST (no request when refused)."""
    try:
        target = guard.check(c.url, ws.allow_hosts, resolve)
    except guard.Unresolvable as exc:
        return Attempt(False, error=str(exc))
    except guard.Refused as exc:
        return Attempt(False, error=f"refused: {exc}", final=True)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
        "User-Agent": ws.user_agent,
        "webhook-id": c.delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(c.secret, c.delivery_id, timestamp, c.body),
    }
    return post(http or client(), target, c.body, headers, ws)


def deliver(rt, delivery_pk: int, token: str, *, http: httpx.Client | None = None,
            resolve: guard.Resolver = guard.system_resolver) -> str:
    """Run one attempt of a delivery this token owns; returns the resulting status.

    No database session is held open during the HTTP request.
    """
    ws = rt.settings.webhooks
    with _writing(rt) as conn:
        c = claim(conn, delivery_pk, token, ws)
    if c is None:
        return "skipped"
    a = attempt(c, ws, http, resolve)
    with _writing(rt) as conn:
        nxt = record(conn, c, token, a, ws)
    if nxt.token is not None:
        enqueue(rt, c.id, nxt.token, c.tenant_id, eta=nxt.retry_at)
    if not a.ok:
        log.info("Webhook delivery %s attempt %d failed: %s", c.delivery_id, c.attempts, a.error)
    return nxt.status


_sqlite_write_locks: dict[int, threading.Lock] = {}


@contextmanager
def _writing(rt) -> Iterator[Connection]:
    """A write transaction; on SQLite, worker threads take turns on a Python lock.

    SQLite has one writer at a time, and a thread that finds the database
    locked sleeps in SQLite's busy handler (1, 2, 5, 10 ms ...): with several
    workers that sleeping, not the work, set the pace. Waiting on a lock
    wakes the next thread as soon as the previous commit is done.
    """
    if rt.engine.dialect.name != "sqlite":
        with rt.engine.begin() as conn:
            yield conn
        return
    lock = _sqlite_write_locks.setdefault(id(rt.engine), threading.Lock())
    with lock, rt.engine.begin() as conn:
        yield conn


def enqueue(rt, delivery_pk: int, token: str, tenant_id: int | None,
            eta: dt.datetime | None = None) -> str:
    """Enqueue the job owning ``token`` (the token is also the Huey task id).

    The ETA is rounded up to a whole second: the queue keeps whole seconds,
    and a retry must never run before a receiver's ``Retry-After``.
    """
    if eta is not None and eta.microsecond:
        eta = eta.replace(microsecond=0) + dt.timedelta(seconds=1)
    return rt.enqueue(JOB, delivery_pk=delivery_pk, job_token=token, id=token,
                      tenant_id=tenant_id, eta=eta)


# ---------------------------------------------------------------- the safety net


def requeue_stalled(s: Session, ws: WebhookSettings, now: dt.datetime | None = None,
                    limit: int = 1000) -> list[tuple[int, str, int]]:
    """Hand deliveries whose job seems lost to a new token; returns (pk, token, tenant).

    Lost means: a failed delivery whose retry time passed more than
    ``pending_grace_s`` ago, a pending one untouched that long, or one stuck
    delivering for that long plus twice the timeout. If the old job still
    exists after all, the new token makes it a no-op. The caller enqueues
    after committing; a crash in between is caught by the next run.
    """
    now = now or utcnow()
    grace = dt.timedelta(seconds=ws.pending_grace_s)
    D = WebhookDelivery
    s.execute(sa.update(D).where(D.status == "failed", D.attempts >= max_attempts(ws)).values(
        status="dead", job_id=None, next_retry_at=None, updated_at=now))
    stalled = sa.or_(
        sa.and_(D.status == "failed", D.next_retry_at <= now - grace),
        sa.and_(D.status == "pending", D.updated_at <= now - grace),
        sa.and_(D.status == "delivering",
                D.updated_at <= now - grace - dt.timedelta(seconds=2 * ws.timeout_s)),
    )
    rows = s.execute(sa.select(D.id, D.job_id, D.tenant_id, D.updated_at).where(stalled)
                     .order_by(D.id).limit(limit)).all()
    out = []
    for pk, old, tenant_id, updated_at in rows:
        token = new_token()
        same_owner = D.job_id.is_(None) if old is None else D.job_id == old
        hit = s.execute(sa.update(D).where(D.id == pk, same_owner, D.updated_at == updated_at)
                        .values(job_id=token, updated_at=now)).rowcount
        if hit:
            out.append((pk, token, tenant_id))
    return out


# ---------------------------------------------------------------- the job and the periodic task


@job(JOB, retries=0)
def deliver_webhook_job(delivery_pk: int, job_token: str) -> None:
    """POST one webhook delivery (signed), record it, schedule its retry."""
    deliver(current(), delivery_pk, job_token)


@periodic("erp:retry-webhook-deliveries", description="Re-enqueue due webhook retries and lost deliveries")
def retry_webhook_deliveries() -> int:
    rt = current()
    with rt.session() as s:
        todo = requeue_stalled(s, rt.settings.webhooks)
    for pk, token, tenant_id in todo:
        enqueue(rt, pk, token, tenant_id)
    if todo:
        log.info("Re-enqueued %d webhook deliveries", len(todo))
    return len(todo)
