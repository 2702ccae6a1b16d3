"""Per-tenant fairness: queue stores that take work round-robin across tenants.

With ``[queue] fair = true`` a runner's store keeps each task's *lane* (its
tenant, 0 for none, and its job name) beside the task, and the atomic claim
step of the reliable storages (``store.py``) picks the next task round-robin
across lanes instead of strictly first-in first-out:

- SQLite: ``task``, ``schedule`` and ``erpq_inflight`` carry ``tenant`` and
  ``name`` columns; the claim transaction selects the oldest task of the next
  tenant after the last one served (an index on queue, tenant, priority, id),
  deletes it and inserts the in-flight row, as before in one transaction.
- Redis: one list per lane and a ring (list) of non-empty lanes; one Lua
  script rotates the ring, moves the lane's oldest task to the runner's
  in-flight list (as ``LMOVE`` did) and drops an emptied lane from the ring.

So a tenant B job enqueued behind 10,000 jobs of tenant A is taken within one
round over the tenants with work, and at-least-once delivery is unchanged: a
task is always in exactly one of schedule, queue, in-flight.

Caps: ``queue.tenant_concurrency`` (at most N claimed jobs per tenant) and
``queue.task_concurrency`` (``{JobName = N}``) are checked inside the same
claim step against the claims held (SQLite: ``erpq_inflight`` rows; Redis: a
hash of counts kept by the same scripts), so they hold across every runner of
the queue. A claim is held from the take until the worker's next dequeue, a
little longer than the job runs: the caps are never exceeded, only met a
moment late. All runners of one queue must agree on ``queue.fair``.

Redis lanes are per tenant *and* job name (the Lua script must know both to
check the caps without decoding the task); SQLite rotates per tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .store import ReliableRedisStorage, ReliableSqliteStorage

Lane = tuple[int, str]  # (tenant id or 0, job name)
LaneOf = Callable[[bytes], Lane]


def _no_lane(data: bytes) -> Lane:
    return (0, "")


class FairSqliteStorage(ReliableSqliteStorage):
    fair = True

    def __init__(self, *args, tenant_cap: int = 0, task_caps: dict | None = None, **kwargs):
        self.tenant_cap = tenant_cap
        self.task_caps = dict(task_caps or {})
        self.lane_of: LaneOf = _no_lane
        self._last_tenant = -1  # the tenant served last (round-robin cursor of this runner)
        super().__init__(*args, **kwargs)
        self._add_lane_columns()

    def _add_lane_columns(self) -> None:
        with self.db(commit=True) as curs:
            for table in ("task", "schedule", "erpq_inflight"):
                cols = {row[1] for row in curs.execute(f"pragma table_info({table})").fetchall()}
                if "tenant" not in cols:
                    curs.execute(f"alter table {table} add column tenant integer not null default 0")
                if "name" not in cols:
                    curs.execute(f"alter table {table} add column name text not null default ''")
            curs.execute("create index if not exists erpq_task_fair on task (queue, tenant, priority desc, id)")

    # -- adding work (every path records the lane)
    def enqueue(self, data, priority=None):
        tenant, name = self.lane_of(data)
        self.sql("insert into task (queue, data, priority, tenant, name) values (?, ?, ?, ?, ?)",
                 (self.name, self.to_blob(data), priority or 0, tenant, name), commit=True)
        self.waker.wake()

    def add_to_schedule(self, data, ts):
        tenant, name = self.lane_of(data)
        self.sql("insert into schedule (queue, data, timestamp, tenant, name) values (?, ?, ?, ?, ?)",
                 (self.name, self.to_blob(data), ts.timestamp(), tenant, name), commit=True)

    def read_schedule(self, ts):
        with self.db(commit=True) as curs:
            curs.execute(
                "insert into task (queue, data, priority, tenant, name) select queue, data, 0, tenant, name "
                "from schedule where queue = ? and timestamp <= ? order by timestamp, id",
                (self.name, ts.timestamp()),
            )
            moved = curs.rowcount
            curs.execute("delete from schedule where queue = ? and timestamp <= ?", (self.name, ts.timestamp()))
        if moved > 0:
            self.waker.wake()
        return []

    def requeue_claims(self, claims, runner=None) -> int:
        taken = 0
        with self.db(commit=True) as curs:
            for cid, data in claims:
                curs.execute("delete from erpq_inflight where id = ?", (cid,))
                if curs.rowcount != 1:
                    continue
                taken += 1
                if data is not None:
                    tenant, name = self.lane_of(bytes(data))
                    curs.execute("insert into task (queue, data, priority, tenant, name) values (?, ?, 1, ?, ?)",
                                 (self.name, self.to_blob(data), tenant, name))
        if taken:
            self.waker.wake()
        return taken

    # -- taking work: round-robin over tenants, caps, one transaction
    def _blocked(self, curs) -> tuple[list[int], list[str]]:
        per_tenant: dict[int, int] = {}
        per_name: dict[str, int] = {}
        for tenant, name, n in curs.execute(
                "select tenant, name, count(*) from erpq_inflight where queue = ? group by tenant, name",
                (self.name,)).fetchall():
            per_tenant[tenant] = per_tenant.get(tenant, 0) + n
            per_name[name] = per_name.get(name, 0) + n
        tenants = [t for t, n in per_tenant.items() if t and self.tenant_cap and n >= self.tenant_cap]
        names = [nm for nm, n in per_name.items() if nm in self.task_caps and n >= self.task_caps[nm]]
        return tenants, names

    def _pick(self, curs, after: int, tenants: list[int], names: list[str]):
        sql = "select id, data, tenant, name from task where queue = ? and tenant > ?"
        params: list = [self.name, after]
        if tenants:
            sql += f" and tenant not in ({','.join('?' * len(tenants))})"
            params += tenants
        if names:
            sql += f" and name not in ({','.join('?' * len(names))})"
            params += names
        curs.execute(sql + " order by tenant, priority desc, id limit 1", params)
        return curs.fetchone()

    def _dequeue(self, release):  # ReliableSqliteStorage.dequeue keeps a failed release
        if not self.sql("select 1 from task where queue = ? limit 1", (self.name,), results=True):
            if release is not None or self._claims.stale_keys:
                with self.db(commit=True) as curs:
                    self._cleanup(curs, release)
            return None
        with self.db(commit=True) as curs:
            self._cleanup(curs, release)
            tenants, names = self._blocked(curs) if (self.tenant_cap or self.task_caps) else ([], [])
            row = self._pick(curs, self._last_tenant, tenants, names)
            if row is None and self._last_tenant >= 0:
                row = self._pick(curs, -1, tenants, names)  # wrap around
            if row is None:
                return None
            tid, data, tenant, name = row
            self._last_tenant = tenant
            curs.execute("delete from task where id = ?", (tid,))
            curs.execute(
                "insert into erpq_inflight (queue, runner, claimed_at, data, tenant, name) values (?, ?, ?, ?, ?, ?)",
                (self.name, self.runner_id, time.time(), data, tenant, name),
            )
            self._claims.claim = curs.lastrowid
            return data

    # -- per tenant
    def tenant_depths(self) -> dict[int, tuple[int, bytes]]:
        """Tenant -> (pending jobs, the oldest one's data)."""
        rows = self.sql("select tenant, count(*), min(id) from task where queue = ? group by tenant",
                        (self.name,), results=True)
        out = {}
        for tenant, n, first in rows:
            data = self.sql("select data from task where id = ?", (first,), results=True)
            out[tenant] = (n, bytes(data[0][0]) if data else b"")
        return out

    def running_by_tenant(self) -> dict[int, int]:
        return dict(self.sql("select tenant, count(*) from erpq_inflight where queue = ? group by tenant",
                             (self.name,), results=True))


# ---------------------------------------------------------------- Redis

# KEYS: lane list, ring. ARGV: data, lane id. Adds the lane to the ring when it was empty.
_LANE_PUSH_LUA = """
if redis.call('lpush', KEYS[1], ARGV[1]) == 1 then redis.call('rpush', KEYS[2], ARGV[2]) end
return 1
"""

# Decrement the running counts of a released claim (lane looked up in the claim-lane hash).
_RELEASE_SNIPPET = """
local function release(inflight, claimed, claimlane, running, data)
  if redis.call('lrem', inflight, 1, data) == 1 then
    redis.call('hdel', claimed, data)
    local lane = redis.call('hget', claimlane, data)
    if lane then
      redis.call('hdel', claimlane, data)
      local sep = string.find(lane, '|', 1, true)
      redis.call('hincrby', running, 't:' .. string.sub(lane, 1, sep - 1), -1)
      redis.call('hincrby', running, 'n:' .. string.sub(lane, sep + 1), -1)
    end
    return 1
  end
  return 0
end
"""

# KEYS: ring, in-flight list, claimed hash, claim-lane hash, running hash, caps hash,
# plain queue list, result hash. ARGV: finished claim or '', lane key prefix, result keys...
_FAIR_TAKE_LUA = _RELEASE_SNIPPET + """
if ARGV[1] ~= '' then release(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1]) end
for i = 3, #ARGV do redis.call('hdel', KEYS[8], ARGV[i]) end
local t = redis.call('time')
local now = t[1] .. '.' .. string.format('%06d', t[2])
local data = redis.call('lmove', KEYS[7], KEYS[2], 'RIGHT', 'LEFT')
if data then
  redis.call('hset', KEYS[3], data, now)
  return data
end
local tcap = tonumber(redis.call('hget', KEYS[6], 'tenant') or '0')
local n = redis.call('llen', KEYS[1])
for i = 1, n do
  local lane = redis.call('lmove', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  if not lane then return nil end
  local sep = string.find(lane, '|', 1, true)
  local tenant, name = string.sub(lane, 1, sep - 1), string.sub(lane, sep + 1)
  local ok = true
  if tcap > 0 and tenant ~= '0' and tonumber(redis.call('hget', KEYS[5], 't:' .. tenant) or '0') >= tcap then
    ok = false
  end
  if ok then
    local ncap = tonumber(redis.call('hget', KEYS[6], 'n:' .. name) or '0')
    if ncap > 0 and tonumber(redis.call('hget', KEYS[5], 'n:' .. name) or '0') >= ncap then ok = false end
  end
  if ok then
    local lkey = ARGV[2] .. lane
    data = redis.call('lmove', lkey, KEYS[2], 'RIGHT', 'LEFT')
    if redis.call('llen', lkey) == 0 then redis.call('lrem', KEYS[1], 1, lane) end
    if data then
      redis.call('hset', KEYS[3], data, now)
      redis.call('hset', KEYS[4], data, lane)
      redis.call('hincrby', KEYS[5], 't:' .. tenant, 1)
      redis.call('hincrby', KEYS[5], 'n:' .. name, 1)
      return data
    end
  end
end
return nil
"""

# KEYS: in-flight list, claimed hash, claim-lane hash, running hash. ARGV: data.
_FAIR_RELEASE_LUA = _RELEASE_SNIPPET + """
return release(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
"""

# KEYS: in-flight list, claimed hash, claim-lane hash, running hash, lane list, ring.
# ARGV: claimed data, replacement data or '', lane id. Atomic per item.
_FAIR_REQUEUE_LUA = _RELEASE_SNIPPET + """
if release(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]) == 1 then
  if ARGV[2] ~= '' then
    if redis.call('rpush', KEYS[5], ARGV[2]) == 1 then redis.call('rpush', KEYS[6], ARGV[3]) end
  end
  return 1
end
return 0
"""

# KEYS: schedule zset, lane list, ring. ARGV: data, lane id. Moves one due task, once.
_FAIR_SCHEDULED_LUA = """
if redis.call('zrem', KEYS[1], ARGV[1]) == 1 then
  if redis.call('lpush', KEYS[2], ARGV[1]) == 1 then redis.call('rpush', KEYS[3], ARGV[2]) end
  return 1
end
return 0
"""

# KEYS: lane list, ring. ARGV: data, lane id.
_LANE_REMOVE_LUA = """
local n = redis.call('lrem', KEYS[1], 1, ARGV[1])
if n == 1 and redis.call('llen', KEYS[1]) == 0 then redis.call('lrem', KEYS[2], 1, ARGV[2]) end
return n
"""


class FairRedisStorage(ReliableRedisStorage):
    fair = True

    def __init__(self, *args, tenant_cap: int = 0, task_caps: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lane_of: LaneOf = _no_lane
        self.ring_key = f"huey.erpq.ring.{self.name}"
        self.lane_prefix = f"huey.erpq.lane.{self.name}."
        self.running_key = f"huey.erpq.running.{self.name}"
        self.caps_key = f"huey.erpq.caps.{self.name}"
        caps = {"tenant": tenant_cap, **{f"n:{k}": v for k, v in (task_caps or {}).items()}}
        pipe = self.conn.pipeline()
        pipe.delete(self.caps_key)
        pipe.hset(self.caps_key, mapping=caps)
        pipe.execute()
        self._push = self.conn.register_script(_LANE_PUSH_LUA)
        self._take = self.conn.register_script(_FAIR_TAKE_LUA)
        self._release = self.conn.register_script(_FAIR_RELEASE_LUA)
        self._requeue_fair = self.conn.register_script(_FAIR_REQUEUE_LUA)
        self._move_due = self.conn.register_script(_FAIR_SCHEDULED_LUA)
        self._lane_remove = self.conn.register_script(_LANE_REMOVE_LUA)

    @staticmethod
    def lane_id(lane: Lane) -> str:
        return f"{lane[0]}|{lane[1]}"

    def claimlane_key(self, runner: str | None = None) -> str:
        return f"huey.erpq.claimlane.{self.name}.{runner or self.runner_id}"

    def _lanes(self) -> list[str]:
        return [raw.decode() for raw in self.conn.lrange(self.ring_key, 0, -1)]

    # -- adding work
    def enqueue(self, data, priority=None):
        lane = self.lane_id(self.lane_of(data))
        self._push(keys=[self.lane_prefix + lane, self.ring_key], args=[data, lane])

    def read_schedule(self, ts):
        for data in self.conn.zrangebyscore(self.schedule_key, "-inf", self.convert_ts(ts)):
            lane = self.lane_id(self.lane_of(data))
            self._move_due(keys=[self.schedule_key, self.lane_prefix + lane, self.ring_key], args=[data, lane])
        return []

    def requeue_claims(self, claims, runner=None) -> int:
        taken = 0
        key = self.inflight_key(runner)
        for original, data in claims:
            lane = self.lane_id(self.lane_of(data)) if data else "0|"
            taken += self._requeue_fair(
                keys=[key, self.claimed_key(runner), self.claimlane_key(runner), self.running_key,
                      self.lane_prefix + lane, self.ring_key],
                args=[original, data or b"", lane])
        if runner and not self.conn.llen(key):
            self.conn.srem(self.runners_key, runner)
            self.conn.delete(self.claimed_key(runner), self.claimlane_key(runner))
        return taken

    # -- taking work
    def _dequeue(self, release, stale):  # ReliableRedisStorage.dequeue keeps a failed release
        if self._registered != self.runner_id:
            self.register_runner()
        data = self._take(
            keys=[self.ring_key, self.inflight_key(), self.claimed_key(), self.claimlane_key(),
                  self.running_key, self.caps_key, self.queue_key, self.result_key],
            args=[release or b"", self.lane_prefix, *stale])
        if data is not None:
            self._claims.claim = data
        return data

    def release_pending(self) -> None:
        release, self._claims.release = self._claims.release, None
        stale, self._claims.stale_keys = self._claims.stale_keys, ()
        try:
            if release is not None:
                self._release(keys=[self.inflight_key(), self.claimed_key(), self.claimlane_key(),
                                    self.running_key], args=[release])
            if stale:
                self.conn.hdel(self.result_key, *stale)
        except BaseException:
            self._keep(release, stale)
            raise
        self._forgot(release)

    # -- reading and removing
    def queue_size(self) -> int:
        lanes = self._lanes()
        pipe = self.conn.pipeline(transaction=False)
        pipe.llen(self.queue_key)
        for lane in lanes:
            pipe.llen(self.lane_prefix + lane)
        return sum(pipe.execute())

    def enqueued_items(self, limit=None):
        return [data for _k, data in self.enqueued_page(0, limit or 1_000_000)]

    def enqueued_page(self, offset: int = 0, limit: int = 50) -> list[tuple[object, bytes]]:
        out: list[tuple[object, bytes]] = []
        skip = offset
        for key in [self.queue_key, *(self.lane_prefix + lane for lane in self._lanes())]:
            n = self.conn.llen(key)
            if skip >= n:
                skip -= n
                continue
            items = self.conn.lrange(key, -(skip + limit - len(out)), -1 - skip)
            out.extend((data, data) for data in reversed(items))
            skip = 0
            if len(out) >= limit:
                break
        return out[:limit]

    def remove_enqueued(self, key: object) -> bool:
        if self.conn.lrem(self.queue_key, 1, key):
            return True
        lane = self.lane_id(self.lane_of(key))
        return bool(self._lane_remove(keys=[self.lane_prefix + lane, self.ring_key], args=[key, lane]))

    def flush_queue(self):
        lanes = self._lanes()
        self.conn.delete(self.queue_key, self.ring_key, *(self.lane_prefix + lane for lane in lanes))

    def flush_all(self):
        lanes = self._lanes()
        super().flush_all()
        for raw in self.conn.smembers(self.runners_key):
            self.conn.delete(self.claimlane_key(raw.decode()))
        self.conn.delete(self.ring_key, self.running_key, *(self.lane_prefix + lane for lane in lanes))

    # -- per tenant
    def tenant_depths(self) -> dict[int, tuple[int, bytes]]:
        out: dict[int, tuple[int, bytes]] = {}
        for lane in self._lanes():
            tenant = int(lane.split("|", 1)[0])
            key = self.lane_prefix + lane
            n = self.conn.llen(key)
            oldest = self.conn.lindex(key, -1) or b""
            prev = out.get(tenant)
            out[tenant] = (n + (prev[0] if prev else 0), prev[1] if prev else oldest)
        return out

    def running_by_tenant(self) -> dict[int, int]:
        out = {}
        for field, n in self.conn.hgetall(self.running_key).items():
            f = field.decode()
            if f.startswith("t:") and int(n) > 0:
                out[int(f[2:])] = int(n)
        return out
