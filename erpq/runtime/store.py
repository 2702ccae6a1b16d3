"""Huey storages that remember what a worker has taken (the reliable-queue pattern).

Plain Huey deletes a task from its store when a worker takes it, so a worker
killed mid-task loses it. These storages move the task, in the same atomic
step, into an in-flight area owned by the taking runner, and drop it from
there only after the task has finished (or been re-queued for a retry):

- SQLite: the ``task`` row is deleted and an ``erpq_inflight`` row inserted in
  one exclusive transaction.
- Redis: ``LMOVE``/``BLMOVE`` from the queue list to a per-runner in-flight list.

Releasing is deferred to the worker's next dequeue, where it rides in the same
transaction (SQLite) or pipeline (Redis), so tracking costs no extra fsync or
round trip per job. A runner that stops heart-beating has its in-flight tasks
moved back to the queue by ``recover``.

The SQLite storage also wakes idle runners on this host after every enqueue
(``erpq.runtime.wake``); Redis needs no wake-up (its workers block in BLMOVE).

Both add paged reads (``enqueued_page``, ``scheduled_page``, ``inflight_page``)
that Huey's storages lack, so the console never loads a whole queue.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from huey.storage import RedisStorage, SqliteStorage

from .wake import Listener, Waker

try:  # the Redis storages below run only with the driver installed (erpq[redis])
    import redis
except ImportError:  # pragma: no cover - a SQLite-only install
    redis = None

#: A claim is (claim key, runner id, claimed_at epoch or None, serialized task).
Claim = tuple[object, str, float | None, bytes]


class _ClaimState(threading.local):
    claim: object = None  # the claim of the task being executed by this thread
    release: object = None  # a finished claim, dropped at the next dequeue
    stale_keys: tuple = ()  # result-store keys (revoke flags) to drop at the next dequeue


class _Claims:
    """Claim bookkeeping shared by both storages (``_claims`` is per thread; each
    storage defines ``release_pending``)."""

    _claims: _ClaimState

    def finish_claim(self) -> None:
        """The current task is done: release its claim with the next dequeue."""
        claim, self._claims.claim = self._claims.claim, None
        if claim is not None:
            if self._claims.release is not None:
                self.release_pending()
            self._claims.release = claim

    def drop_claim(self) -> None:
        """Forget the current claim without releasing it (the task did not finish)."""
        self._forgot(self._claims.claim)
        self._claims.claim = None

    def _forgot(self, claim) -> None:
        """No thread of this process works on ``claim`` any more (``ReliableRedisStorage``)."""

    def requeue_current(self, data: bytes) -> bool:
        """Put the current task back on the queue as ``data`` and drop its claim
        (its run ended but could not be handed back, e.g. the retry could not be
        scheduled while the store was away)."""
        claim = self._claims.claim
        if claim is None:
            return False
        taken = self.requeue_claims([(claim, data)])  # an error keeps the claim, for another try
        self._forgot(claim)
        self._claims.claim = None
        return bool(taken)

    def _keep(self, release, stale: tuple) -> None:
        """A release that failed (the store unreachable, locked or full) is kept for
        the next dequeue: dropped, its finished task would stay claimed by this
        runner and run again once the runner stops and its claims are recovered."""
        self._claims.claim = None
        if release is not None and self._claims.release is None:
            self._claims.release = release
        self._claims.stale_keys = tuple(dict.fromkeys(stale + self._claims.stale_keys))

    def delete_later(self, key: str) -> None:
        """Delete a result-store key (Huey clears each finished task's revoke flag)
        with this thread's next dequeue, saving a write per job."""
        self._claims.stale_keys += (key,)


class ReliableSqliteStorage(_Claims, SqliteStorage):
    table_inflight = (
        "create table if not exists erpq_inflight ("
        "id integer not null primary key, queue text not null, runner text not null, "
        "claimed_at real not null, data blob not null)"
    )
    # No index: the table holds at most one row per busy worker.
    ddl = SqliteStorage.ddl + [table_inflight]

    def __init__(self, *args, runner_id: str = "", **kwargs):
        self.runner_id = runner_id
        self._claims = _ClaimState()
        super().__init__(*args, **kwargs)
        #: Sends wake-ups to this host's runners of the queue (after each commit).
        self.waker = Waker(self.filename, self.name)
        #: This runner's wake-up socket while a consumer runs (``listen``).
        self.wake_listener: Listener | None = None

    # -- wake-ups (erpq.runtime.wake)
    def enqueue(self, data, priority=None):
        super().enqueue(data, priority)
        self.waker.wake()

    def listen(self) -> Listener | None:
        """Start receiving wake-ups for this runner's workers (None: polling only)."""
        if self.wake_listener is None:
            listener = Listener(self.filename, self.name)
            if listener.start():
                self.wake_listener = listener
        return self.wake_listener

    def stop_listening(self) -> None:
        listener, self.wake_listener = self.wake_listener, None
        if listener is not None:
            listener.stop()

    def close(self):
        self.waker.close()
        return super().close()

    # -- taking and releasing work
    def _cleanup(self, curs, release) -> None:
        if release is not None:
            curs.execute("delete from erpq_inflight where id = ?", (release,))
        for key in self._claims.stale_keys:
            curs.execute("delete from kv where queue = ? and key = ?", (self.name, key))
        self._claims.stale_keys = ()

    def dequeue(self):
        release, self._claims.release = self._claims.release, None
        stale = self._claims.stale_keys
        try:
            return self._dequeue(release)
        except BaseException:
            self._keep(release, stale)
            raise

    def _dequeue(self, release):
        if not self.sql("select 1 from task where queue = ? limit 1", (self.name,), results=True):
            if release is not None or self._claims.stale_keys:
                with self.db(commit=True) as curs:
                    self._cleanup(curs, release)
            return None
        with self.db(commit=True) as curs:
            self._cleanup(curs, release)
            curs.execute(
                "select id, data from task where queue = ? order by priority desc, id limit 1",
                (self.name,),
            )
            row = curs.fetchone()
            if row is None:
                return None
            tid, data = row
            curs.execute("delete from task where id = ?", (tid,))
            curs.execute(
                "insert into erpq_inflight (queue, runner, claimed_at, data) values (?, ?, ?, ?)",
                (self.name, self.runner_id, time.time(), data),
            )
            self._claims.claim = curs.lastrowid
            return data

    def release_pending(self) -> None:
        release, self._claims.release = self._claims.release, None
        stale = self._claims.stale_keys
        if release is not None or stale:
            try:
                with self.db(commit=True) as curs:
                    self._cleanup(curs, release)
            except BaseException:
                self._keep(release, stale)
                raise

    def read_schedule(self, ts):
        """Move due scheduled tasks straight into the queue, in one transaction.

        Huey pops them from the schedule and then enqueues them one by one: a
        process killed in between loses them. Here nothing is handed back to
        Huey's scheduler (it has nothing left to enqueue); a due task is always
        either still scheduled or already queued.
        """
        with self.db(commit=True) as curs:
            curs.execute(
                "insert into task (queue, data, priority) select queue, data, 0 from schedule "
                "where queue = ? and timestamp <= ? order by timestamp, id",
                (self.name, ts.timestamp()),
            )
            moved = curs.rowcount
            curs.execute("delete from schedule where queue = ? and timestamp <= ?", (self.name, ts.timestamp()))
        if moved > 0:
            self.waker.wake()
        return []

    # -- in-flight introspection and recovery
    def inflight_count(self) -> int:
        return self.sql(
            "select count(*) from erpq_inflight where queue = ?", (self.name,), results=True
        )[0][0]

    def inflight_page(self, offset: int = 0, limit: int = 50) -> list[Claim]:
        return [
            (cid, runner, ts, bytes(data))
            for cid, runner, ts, data in self.sql(
                "select id, runner, claimed_at, data from erpq_inflight where queue = ? "
                "order by id limit ? offset ?",
                (self.name, limit, offset),
                results=True,
            )
        ]

    def inflight_runners(self) -> dict[str, float]:
        """Runner id -> oldest claim time, for every runner holding work."""
        return dict(
            self.sql(
                "select runner, min(claimed_at) from erpq_inflight where queue = ? group by runner",
                (self.name,),
                results=True,
            )
        )

    def inflight_of(self, runner: str) -> list[Claim]:
        return [
            (cid, runner, ts, bytes(data))
            for cid, ts, data in self.sql(
                "select id, claimed_at, data from erpq_inflight where queue = ? and runner = ? order by id",
                (self.name, runner),
                results=True,
            )
        ]

    def requeue_claims(self, claims: list[tuple[object, bytes | None]], runner: str | None = None) -> int:
        """Atomically drop the given claims and put each non-None data back on the queue.

        A claim already gone (another reaper got it) is skipped with its data.
        Returns how many claims this call took.
        """
        taken = 0
        with self.db(commit=True) as curs:
            for cid, data in claims:
                curs.execute("delete from erpq_inflight where id = ?", (cid,))
                if curs.rowcount != 1:
                    continue
                taken += 1
                if data is not None:
                    # Priority 1: recovered work goes ahead of new work.
                    curs.execute(
                        "insert into task (queue, data, priority) values (?, ?, 1)",
                        (self.name, self.to_blob(data)),
                    )
        if taken:
            self.waker.wake()
        return taken

    # -- paged reads and removal by position
    def enqueued_page(self, offset: int = 0, limit: int = 50) -> list[tuple[object, bytes]]:
        return [
            (tid, bytes(data))
            for tid, data in self.sql(
                "select id, data from task where queue = ? order by priority desc, id limit ? offset ?",
                (self.name, limit, offset),
                results=True,
            )
        ]

    def scheduled_page(self, offset: int = 0, limit: int = 50) -> list[tuple[object, bytes, float]]:
        return [
            (sid, bytes(data), ts)
            for sid, data, ts in self.sql(
                "select id, data, timestamp from schedule where queue = ? order by timestamp, id "
                "limit ? offset ?",
                (self.name, limit, offset),
                results=True,
            )
        ]

    def remove_enqueued(self, key: object) -> bool:
        with self.db(commit=True) as curs:
            curs.execute("delete from task where id = ? and queue = ?", (key, self.name))
            return curs.rowcount == 1

    def remove_scheduled(self, key: object) -> bool:
        with self.db(commit=True) as curs:
            curs.execute("delete from schedule where id = ? and queue = ?", (key, self.name))
            return curs.rowcount == 1

    def flush_all(self):
        super().flush_all()
        self.sql("delete from erpq_inflight where queue = ?", (self.name,), commit=True)


# Drop one claimed item; if it was there, push its replacement (if any) to the
# consuming end of the queue. Atomic, so two reapers can never both requeue it.
_REQUEUE_LUA = """
if redis.call('lrem', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('hdel', KEYS[3], ARGV[1])
  if ARGV[2] ~= '' then redis.call('rpush', KEYS[2], ARGV[2]) end
  return 1
end
return 0
"""


# Move every scheduled task due by ARGV[1] to the queue, atomically (KEYS:
# schedule zset, queue list). Huey's own pop hands them to Python to enqueue.
_SCHEDULE_TO_QUEUE_LUA = """
local due = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1])
for i = 1, #due do redis.call('lpush', KEYS[2], due[i]) end
if #due > 0 then redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1]) end
return #due
"""

# KEYS: in-flight list, queue list, result hash, claim-time hash. ARGV[1]:
# finished claim (or ''), ARGV[2..]: result keys to delete. Returns the next
# task, moved in-flight with its claim time.
_RELEASE_AND_TAKE_LUA = """
if ARGV[1] ~= '' then
  redis.call('lrem', KEYS[1], 1, ARGV[1])
  redis.call('hdel', KEYS[4], ARGV[1])
end
for i = 2, #ARGV do redis.call('hdel', KEYS[3], ARGV[i]) end
local data = redis.call('lmove', KEYS[2], KEYS[1], 'RIGHT', 'LEFT')
if data then
  local t = redis.call('time')
  redis.call('hset', KEYS[4], data, t[1] .. '.' .. string.format('%06d', t[2]))
end
return data
"""


class ReliableRedisStorage(_Claims, RedisStorage):
    """Redis: ``LMOVE``/``BLMOVE`` to a per-runner in-flight list.

    When the connection drops during a take, Redis may have moved the task while
    its reply was lost: the task then sits in this live runner's in-flight list
    with no thread working on it. This process counts the claims its threads
    hold (``_held``); after such an error, ``reclaim_orphans`` (each heartbeat)
    puts back on the queue what the list holds beyond them, once seen in two
    passes (a reply merely in transit is counted by then).
    """

    def __init__(self, *args, runner_id: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.runner_id = runner_id
        self._claims = _ClaimState()
        self._held: Counter = Counter()
        self._held_lock = threading.Lock()
        self._uncertain = 0  # connection errors during a take since the last clean pass
        self._suspects: set = set()
        self.runners_key = f"huey.erpq.runners.{self.name}"
        self._registered: str | None = None
        self._requeue = self.conn.register_script(_REQUEUE_LUA)
        self._release_and_take = self.conn.register_script(_RELEASE_AND_TAKE_LUA)
        self._schedule_to_queue = self.conn.register_script(_SCHEDULE_TO_QUEUE_LUA)

    def inflight_key(self, runner: str | None = None) -> str:
        return f"huey.erpq.inflight.{self.name}.{runner or self.runner_id}"

    def claimed_key(self, runner: str | None = None) -> str:
        """Hash: claimed task data -> claim time (epoch seconds) of a runner's claims."""
        return f"huey.erpq.claimed.{self.name}.{runner or self.runner_id}"

    def register_runner(self) -> None:
        """List this runner, so that reapers find its in-flight list."""
        self.conn.sadd(self.runners_key, self.runner_id)
        self._registered = self.runner_id

    def dequeue(self):
        release, self._claims.release = self._claims.release, None
        stale, self._claims.stale_keys = self._claims.stale_keys, ()
        try:
            data = self._dequeue(release, stale)
        except BaseException as exc:
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                self._uncertain += 1  # a task may have moved in-flight with its reply lost
            self._keep(release, stale)
            raise
        with self._held_lock:
            if release is not None:
                self._held[release] -= 1
                if self._held[release] <= 0:
                    del self._held[release]
            if data is not None:
                self._held[data] += 1
        return data

    def _forgot(self, claim) -> None:
        if claim is None:
            return
        with self._held_lock:
            self._held[claim] -= 1
            if self._held[claim] <= 0:
                del self._held[claim]

    def reclaim_orphans(self) -> int:
        """After a connection error during a take: put back on the queue the tasks
        in this runner's in-flight list that no thread here holds (seen in two
        passes); returns how many."""
        if not self._uncertain:
            return 0
        errors = self._uncertain
        items = self.conn.lrange(self.inflight_key(), 0, -1)
        with self._held_lock:
            orphans = Counter(items) - self._held
        confirmed = [d for d in orphans if d in self._suspects]
        self._suspects = set(orphans) - set(confirmed)
        taken = self.requeue_claims([(d, d) for d in confirmed]) if confirmed else 0
        if not self._suspects and self._uncertain == errors:
            self._uncertain = 0
        return taken

    def _dequeue(self, release, stale):
        key = self.inflight_key()
        if self._registered != self.runner_id:
            self.register_runner()
        claimed = self.claimed_key()
        if release is not None or stale:
            # One round trip: drop the finished claim and stale keys, take the next task.
            data = self._release_and_take(keys=[key, self.queue_key, self.result_key, claimed],
                                          args=[release or b"", *stale])
            if data is not None:
                self._claims.claim = data
                return data
        moved = None
        if self.blocking:
            try:
                moved = self.conn.blmove(self.queue_key, key, self.read_timeout, "RIGHT", "LEFT")
            except TimeoutError:
                moved = None
        else:
            moved = self.conn.lmove(self.queue_key, key, "RIGHT", "LEFT")
        if moved is not None:  # the queue was empty a moment ago: one more round trip is free
            self._claims.claim = moved
            try:
                self.conn.hset(claimed, moved, time.time())
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # the claim time is for display; the claim itself is taken: run the task
        return moved

    def release_pending(self) -> None:
        release, self._claims.release = self._claims.release, None
        stale, self._claims.stale_keys = self._claims.stale_keys, ()
        try:
            if release is not None:
                self.conn.lrem(self.inflight_key(), 1, release)
                self.conn.hdel(self.claimed_key(), release)
            if stale:
                self.conn.hdel(self.result_key, *stale)
        except BaseException:
            self._keep(release, stale)
            raise
        self._forgot(release)

    def read_schedule(self, ts):
        """Move due scheduled tasks to the queue atomically (see the SQLite storage)."""
        self._schedule_to_queue(keys=[self.schedule_key, self.queue_key], args=[self.convert_ts(ts)])
        return []

    def forget_idle_runners(self, keep: set[str]) -> int:
        """Drop from the runner list every runner not in ``keep`` that holds no
        in-flight work (their ids would otherwise pile up)."""
        dropped = 0
        for raw in self.conn.smembers(self.runners_key):
            runner = raw.decode()
            if runner not in keep and not self.conn.llen(self.inflight_key(runner)):
                dropped += self.conn.srem(self.runners_key, runner)
        return dropped

    def inflight_runners(self) -> dict[str, float | None]:
        runners = {}
        for raw in self.conn.smembers(self.runners_key):
            runner = raw.decode()
            if self.conn.llen(self.inflight_key(runner)):
                runners[runner] = None
        return runners

    def inflight_count(self) -> int:
        pipe = self.conn.pipeline(transaction=False)
        members = [m.decode() for m in self.conn.smembers(self.runners_key)]
        for runner in members:
            pipe.llen(self.inflight_key(runner))
        return sum(pipe.execute()) if members else 0

    def inflight_of(self, runner: str) -> list[Claim]:
        items = list(reversed(self.conn.lrange(self.inflight_key(runner), 0, -1)))
        times = self.conn.hmget(self.claimed_key(runner), items) if items else []
        return [(data, runner, float(ts) if ts else None, data) for data, ts in zip(items, times, strict=True)]

    def inflight_page(self, offset: int = 0, limit: int = 50) -> list[Claim]:
        claims: list[Claim] = []
        for raw in sorted(self.conn.smembers(self.runners_key)):
            claims.extend(self.inflight_of(raw.decode()))
            if len(claims) >= offset + limit:
                break
        return claims[offset: offset + limit]

    def requeue_claims(self, claims: list[tuple[object, bytes | None]], runner: str | None = None) -> int:
        """Drop each claimed item from the runner's in-flight list and push the
        replacement data (if any) to the consuming end of the queue, atomically per item."""
        taken = 0
        key = self.inflight_key(runner)
        for original, data in claims:
            taken += self._requeue(keys=[key, self.queue_key, self.claimed_key(runner)],
                                   args=[original, data or b""])
        if runner and not self.conn.llen(key):
            self.conn.srem(self.runners_key, runner)
            self.conn.delete(self.claimed_key(runner))
        return taken

    def enqueued_page(self, offset: int = 0, limit: int = 50) -> list[tuple[object, bytes]]:
        # The queue is consumed from the right: the next task is at index -1.
        end = -1 - offset
        start = end - limit + 1
        items = self.conn.lrange(self.queue_key, start, end)
        return [(data, data) for data in reversed(items)]

    def scheduled_page(self, offset: int = 0, limit: int = 50) -> list[tuple[object, bytes, float]]:
        items = self.conn.zrange(self.schedule_key, offset, offset + limit - 1, withscores=True)
        return [(data, data, score) for data, score in items]

    def remove_enqueued(self, key: object) -> bool:
        return bool(self.conn.lrem(self.queue_key, 1, key))

    def remove_scheduled(self, key: object) -> bool:
        return bool(self.conn.zrem(self.schedule_key, key))

    def flush_all(self):
        super().flush_all()
        for raw in self.conn.smembers(self.runners_key):
            self.conn.delete(self.inflight_key(raw.decode()), self.claimed_key(raw.decode()))
        self.conn.delete(self.runners_key)
