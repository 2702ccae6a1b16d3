"""Delivering one webhook: read the row, sign, POST, record, schedule the retry.

Ownership ("never two jobs for one delivery at a time"): every enqueue of
``DeliverWebhookJob`` carries a fresh token, written to the delivery's
``job_id`` before the job is enqueued (and used as the Huey task id, so an
operator can match the two). A job works only on a row whose ``job_id`` is
its token: it reads the row with that condition (no write, no commit before
the POST) and writes the outcome with one UPDATE conditional on the token,
which also counts the attempt. A job whose token was replaced (the retry task
re-enqueued the delivery, an operator redelivered it) finds nothing to read,
or nothing to update, and does nothing. The same job re-run after its runner
died (at-least-once) still owns the row and tries again, with the same
``webhook-id``: receivers dedupe on it.

An attempt whose runner died during the POST is not counted: the runtime
re-runs the job (and after ``runner.max_recoveries`` abandons it to
failed_jobs); the retry task then counts the lost job as an attempt when it
re-enqueues the delivery, so a delivery that keeps killing its runner still
runs out of attempts.

Retries are not Huey retries: a failed attempt records ``next_retry_at`` from
the backoff schedule (a ``erpq.runtime.retry.Delays`` strategy, with the receiver's
``Retry-After`` as a floor) and enqueues the next
attempt with that exact ETA, only after the failure is committed.
``erp:retry-webhook-deliveries`` is the safety net for jobs lost in a crash
(see ``requeue_stalled``).

The hot path uses Core statements built once (bound parameters), so a
delivery costs one read, one UPDATE and one commit on top of the POST.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import functools
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
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import Webhook, WebhookDelivery
from ..runtime import current
from ..runtime.retry import Delays
from . import guard, prepared
from .capability import CAPABILITY, WebhookSettings

log = logging.getLogger("erpq.webhooks")

JOB = "DeliverWebhookJob"
#: Statuses a job may (re)claim: pending or a failed attempt.
#: (written by earlier versions before the POST; a run its runner died in).
CLAIMABLE = ("pending", "failed")


# ---------------------------------------------------------------- signing


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of id.timestamp.body."""
    mac = _keyed(secret).copy()
    mac.update(f"{msg_id}.{timestamp}.".encode())
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


@functools.lru_cache(maxsize=256)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC primed with the secret's key, copied for each message (a few
    subscriptions receive most deliveries; the key is decoded once)."""
    return hmac.new(base64.b64decode(secret.removeprefix("whsec_")), digestmod=hashlib.sha256)


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


def post(http: httpx.Client, target: guard.Target, body: bytes, headers: dict[str, str],
         ws: WebhookSettings) -> Attempt:
    """POST ``body`` to the checked addresses of ``target``, in order, until one connects.

    The URL's host is replaced by the checked address (no second DNS lookup);
    the Host header and TLS SNI / certificate check keep the original name.
    The response body is streamed and reading stops at ``max_response_bytes``.
    """
    started = time.monotonic()
    headers["Host"] = target.host_header
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    error = "no address to connect to"
    for address in target.addresses:
        url = _pinned_url(target.url, address)
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


@functools.lru_cache(maxsize=1024)
def _pinned_url(url: str, address: guard.IPAddress) -> httpx.URL:
    """``url`` with its host replaced by the checked address (parsed once per pair)."""
    return httpx.URL(url).copy_with(host=str(address))


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
    attempts: int  # this attempt's number (the row's count + 1, written with the outcome)
    webhook_failures: int  # the subscription's failure count when read


#: Core tables: the hot path skips the ORM's unit of work (one delivery is a
#: handful of statements, and their cost decides throughput).
D = WebhookDelivery.__table__
W = Webhook.__table__
DB = Session | Connection

#: The hot path's statements, compiled once per dialect and run on the DBAPI
#: connection (see ``prepared``): SQLAlchemy's per-execution work costs more
#: than running them.
_READ = prepared.Prepared(
    sa.select(D.c.delivery_id, D.c.tenant_id, D.c.webhook_id, D.c.event, D.c.payload, D.c.created_at,
              D.c.attempts, D.c.error, W.c.url, W.c.secret, W.c.is_active, W.c.disabled_reason,
              W.c.consecutive_failures)
    .select_from(D.outerjoin(W, W.c.id == D.c.webhook_id))
    .where(D.c.id == sa.bindparam("pk"), D.c.job_id == sa.bindparam("token"),
           sa.or_(*(D.c.status == status for status in CLAIMABLE)))
)
_DELIVERED = prepared.Prepared(
    D.update().where(D.c.id == sa.bindparam("pk"), D.c.job_id == sa.bindparam("token"))
    .values(status="delivered", attempts=D.c.attempts + 1, response_code=sa.bindparam("code"),
            response_body=sa.bindparam("body"), error=None, duration_ms=sa.bindparam("ms"),
            delivered_at=sa.bindparam("now"), next_retry_at=None, job_id=None,
            updated_at=sa.bindparam("now"))
)
_RESET_FAILURES = prepared.Prepared(W.update().where(W.c.id == sa.bindparam("hook"))
                                    .values(consecutive_failures=0, first_failure_at=None))


@dataclass(frozen=True)
class Ending:
    """A delivery that ends without a request (its subscription is off, or it is out of attempts)."""

    status: str
    error: str


def claim(engine: Engine, delivery_pk: int, token: str, ws: WebhookSettings) -> Claimed | Ending | None:
    """Read the delivery for this attempt, or None when this job does not own it
    (its token was replaced, or the delivery is finished).

    A read only: the attempt is counted with its outcome (``record``). A
    delivery of a disabled subscription, or out of attempts, comes back as
    the ``Ending`` to write (``end``), with no request.
    """
    with prepared.transaction(engine, write=False) as cursor:
        row = _READ.first(cursor, engine.dialect, pk=delivery_pk, token=token)
    if row is None:
        return None
    if not row.is_active:
        return Ending("dead", f"subscription disabled: {row.disabled_reason or 'deleted'}")
    if row.attempts >= max_attempts(ws):
        return Ending("dead", f"{row.error or 'failed'} (out of attempts)")
    return Claimed(delivery_pk, row.delivery_id, row.tenant_id, row.webhook_id, row.url, row.secret,
                   body_of(row.event, row.payload, row.created_at), row.attempts + 1,
                   row.consecutive_failures)


@dataclass(frozen=True)
class Next:
    """What happens after an attempt: its final status, and the retry to enqueue, if any."""

    status: str
    token: str | None = None
    retry_at: dt.datetime | None = None


def record(engine: Engine, c: Claimed, token: str, a: Attempt, ws: WebhookSettings,
           rng: random.Random | None = None) -> Next:
    """Write the attempt's outcome and count it (one transaction, committed
    before this returns); decide and write the retry (with a new token).

    Every write is conditional on the row still being this token's: a job
    whose delivery was taken over meanwhile writes nothing.
    """
    if not a.ok:
        with _writing(engine) as conn:
            return record_failure(conn, c, token, a, ws, rng)
    with prepared.transaction(engine, write=True) as cursor:
        done = _DELIVERED.execute(cursor, engine.dialect, pk=c.id, token=token, code=a.code, body=a.body,
                                  ms=a.duration_ms, now=utcnow()).rowcount
        if done != 1:  # taken over meanwhile (redelivered by hand): its new owner decides
            return Next("superseded")
        if c.webhook_failures:
            _RESET_FAILURES.execute(cursor, engine.dialect, hook=c.webhook_id)
    return Next("delivered")


def record_failure(db: DB, c: Claimed, token: str, a: Attempt, ws: WebhookSettings,
                   rng: random.Random | None = None) -> Next:
    """Write a failed attempt: dead, or failed with the retry's time and token;
    count the failure on the subscription (which may disable it)."""
    now = utcnow()
    gone = a.code == 410
    if gone or a.final or c.attempts >= max_attempts(ws):
        nxt = Next("dead")
    else:
        delay = backoff_delay(ws, c.attempts, a.retry_after, rng)
        nxt = Next("failed", new_token(), now + dt.timedelta(seconds=delay))
    done = db.execute(D.update().where(D.c.id == c.id, D.c.job_id == token).values(
        status=nxt.status, attempts=D.c.attempts + 1, response_code=a.code, response_body=a.body,
        error=f"{a.error}: subscription disabled" if gone else a.error, duration_ms=a.duration_ms,
        next_retry_at=nxt.retry_at, job_id=nxt.token, updated_at=now)).rowcount
    if done != 1:
        return Next("superseded")
    if gone:
        disable(db, c.webhook_id, "receiver answered 410 Gone", now)
    else:
        _count_failure(db, c.webhook_id, a.error or "failed", ws, now)
    return nxt


def backoff_delay(ws: WebhookSettings, attempts: int, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: the schedule plus jitter, never
    sooner than the receiver's ``Retry-After`` (capped at a day)."""
    return retry_strategy(ws).delay(attempts, not_before=retry_after, rng=rng)


def retry_strategy(ws: WebhookSettings) -> Delays:
    """The runtime's retry strategy for ``webhooks.backoff_s`` and ``webhooks.jitter``."""
    return _strategy(tuple(ws.backoff_s), ws.jitter)


@functools.lru_cache(maxsize=8)
def _strategy(backoff_s: tuple[float, ...], jitter: float) -> Delays:
    return Delays(backoff_s, jitter=jitter)


def end(db: DB, delivery_pk: int, token: str, ending: Ending) -> str:
    """Write an ``Ending`` (if the token still owns the row); returns the resulting status."""
    hit = db.execute(D.update().where(D.c.id == delivery_pk, D.c.job_id == token).values(
        status=ending.status, error=ending.error, job_id=None, next_retry_at=None,
        updated_at=utcnow())).rowcount
    return ending.status if hit else "superseded"


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
    c = claim(rt.engine, delivery_pk, token, ws)
    if c is None:
        return "skipped"
    if isinstance(c, Ending):
        with _writing(rt.engine) as conn:
            return end(conn, delivery_pk, token, c)
    a = attempt(c, ws, http, resolve)
    nxt = record(rt.engine, c, token, a, ws)
    if nxt.token is not None:
        enqueue(rt, c.id, nxt.token, c.tenant_id, eta=nxt.retry_at)
    if not a.ok:
        log.info("Webhook delivery %s attempt %d failed: %s", c.delivery_id, c.attempts, a.error)
    return nxt.status


@contextmanager
def _writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction; on SQLite, worker threads take turns on a Python
    lock (``prepared.sqlite_write_lock``)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with prepared.sqlite_write_lock(engine), engine.begin() as conn:
        yield conn


def enqueue(rt, delivery_pk: int, token: str, tenant_id: int | None,
            eta: dt.datetime | None = None) -> str:
    """Enqueue the job owning ``token`` (the token is also the Huey task id).

    The ETA is rounded up to a whole second: the queue keeps whole seconds,
    and a retry must never run before a receiver's ``Retry-After``.
    """
    if eta is not None and eta.microsecond:
        eta = eta.replace(microsecond=0) + dt.timedelta(seconds=1)
    return rt.enqueue(JOB, delivery_pk=delivery_pk, job_token=token, task_id=token,
                      tenant_id=tenant_id, eta=eta)


# ---------------------------------------------------------------- the safety net


def requeue_stalled(s: Session, ws: WebhookSettings, now: dt.datetime | None = None,
                    limit: int = 1000) -> list[tuple[int, str, int]]:
    """Hand deliveries whose job seems lost to a new token; returns (pk, token, tenant).

    Lost means: a failed delivery whose retry time passed more than
    ``pending_grace_s`` ago, or a pending one untouched that long. If the old job still exists after all, the new token makes it
    a no-op. The caller enqueues after committing; a crash in between is
    caught by the next run.

    A lost pending or failed job counts as an attempt (attempts are otherwise
    counted with their outcome, and a job whose runner keeps dying mid-POST
    never records one): so a delivery cannot cycle through lost jobs forever.
    """
    now = now or utcnow()
    grace = dt.timedelta(seconds=ws.pending_grace_s)
    D = WebhookDelivery
    s.execute(sa.update(D).where(D.status == "failed", D.attempts >= max_attempts(ws)).values(
        status="dead", job_id=None, next_retry_at=None, updated_at=now))
    stalled = sa.or_(
        sa.and_(D.status == "failed", D.next_retry_at <= now - grace),
        sa.and_(D.status == "pending", D.updated_at <= now - grace),
    )
    rows = s.execute(sa.select(D.id, D.job_id, D.tenant_id, D.updated_at).where(stalled)
                     .order_by(D.id).limit(limit)).all()
    out = []
    for pk, old, tenant_id, updated_at in rows:
        token = new_token()
        same_owner = D.job_id.is_(None) if old is None else D.job_id == old
        hit = s.execute(sa.update(D).where(D.id == pk, same_owner, D.updated_at == updated_at)
                        .values(job_id=token, updated_at=now, attempts=D.attempts + 1)).rowcount
        if hit:
            out.append((pk, token, tenant_id))
    return out


# ---------------------------------------------------------------- the job and the periodic task


@CAPABILITY.job(JOB, retries=0)
def deliver_webhook_job(delivery_pk: int, job_token: str) -> None:
    """POST one webhook delivery (signed), record it, schedule its retry."""
    deliver(current(), delivery_pk, job_token)


@CAPABILITY.periodic("erp:retry-webhook-deliveries", cron="*/10 * * * *",
                     description="Re-enqueue due webhook retries and lost deliveries")
def retry_webhook_deliveries() -> int:
    rt = current()
    with rt.session() as s:
        todo = requeue_stalled(s, rt.settings.webhooks)
    for pk, token, tenant_id in todo:
        enqueue(rt, pk, token, tenant_id)
    if todo:
        log.info("Re-enqueued %d webhook deliveries", len(todo))
    return len(todo)
