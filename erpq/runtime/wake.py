"""Same-host wake-ups for idle runners of a SQLite queue.

A SQLite queue lives on one host, so whoever enqueues can tell that host's idle
workers directly instead of leaving them to find the job at their next poll:

- Each runner binds one UNIX datagram socket in the *wake directory* next to
  the queue file (``queue.db`` -> ``queue.db.wake/``). Its name starts with a
  hash of the queue name, so runners of other queues in the same file are left
  alone. A listener thread turns each datagram (or batch of them) into a new
  *generation* and wakes the workers waiting for one (``Listener.wait``).
- After every enqueue has committed, the storage sends a one-byte datagram to
  every socket of its queue in that directory (``Waker.wake``). The listing is
  cached while the directory does not change (re-read at least once a second).
- The directory is created by the first runner and removed by the last one to
  stop (a runner finding it gone while binding makes it again).
- Best effort only: a wake-up that cannot be sent (no directory, a full socket
  buffer, a socket left by a killed runner) is dropped and polling remains the
  fallback, with the consumer's usual interval. A socket nobody listens on any
  more (connection refused) is deleted by the first sender that finds it.
  Nothing leaves the host: these are filesystem sockets.

A path too long for a socket address (about 100 bytes) moves the directory to
``$TMPDIR/erpq-wake-<uid>-<hash of the queue file>``, created with mode 0700;
one owned by someone else, or a symlink, turns wake-ups off for that queue.

While no worker waits, the listener stops reading: datagrams then pile up in
the socket buffer (senders drop them once it is full) and cost the runner
nothing; the next worker to wait drains them first. Senders' datagrams are
sent after the commit, so a worker that waits for a generation newer than the
one it saw before its last (empty) dequeue cannot miss a job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import socket
import stat
import tempfile
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger("erpq.runner")

#: Longest socket path used (Linux allows 107 bytes, macOS 103).
MAX_SOCKET_PATH = 100
#: A cached listing of the wake directory is re-read at least this often (seconds).
RELIST_S = 1.0
SUFFIX = ".sock"
_NAME_LEN = 8 + 1 + 10 + 1 + 8 + len(SUFFIX)  # prefix.pid.random.sock


def queue_prefix(queue_name: str) -> str:
    return hashlib.sha256(queue_name.encode()).hexdigest()[:8]


def wake_dir(queue_file: str | os.PathLike) -> Path | None:
    """The wake directory of a SQLite queue file (None: in-memory database)."""
    name = os.fspath(queue_file)
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    path = Path(os.path.abspath(name) + ".wake")
    if len(os.fsencode(path)) + 1 + _NAME_LEN <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(os.path.abspath(name))).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"erpq-wake-{os.getuid()}-{digest}"


def _usable(directory: Path, create: bool) -> bool:
    """Whether ``directory`` exists (made if ``create``) and is a real directory;
    the private one under $TMPDIR must also be ours and closed to others."""
    private = directory.name.startswith("erpq-wake-") and not directory.name.endswith(".wake")
    try:
        if create:
            try:
                os.mkdir(directory, 0o700 if private else 0o777)
            except FileExistsError:
                pass
        st = os.lstat(directory)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    if private and (st.st_uid != os.getuid() or st.st_mode & 0o077):
        return False
    return True


class Waker:
    """The sending side: ``wake()`` after an enqueue has committed."""

    def __init__(self, queue_file: str | os.PathLike, queue_name: str):
        self.dir = wake_dir(queue_file)
        self.prefix = queue_prefix(queue_name)
        self._sock: socket.socket | None = None
        self._listing: tuple[int, float, tuple[str, ...]] = (-1, 0.0, ())
        self._lock = threading.Lock()

    def _targets(self) -> tuple[str, ...]:
        try:
            mtime = os.stat(self.dir).st_mtime_ns
        except OSError:
            return ()
        seen, at, names = self._listing
        now = time.monotonic()
        if mtime != seen or now - at > RELIST_S:
            if not _usable(self.dir, create=False):
                self._listing = (mtime, now, ())
                return ()
            try:
                names = tuple(os.path.join(self.dir, n) for n in os.listdir(self.dir)
                              if n.startswith(self.prefix) and n.endswith(SUFFIX))
            except OSError:
                names = ()
            self._listing = (mtime, now, names)
        return names

    def wake(self) -> int:
        """Send a wake-up to every runner of this queue on this host; returns how
        many were sent. Never raises."""
        if self.dir is None:
            return 0
        try:
            targets = self._targets()
            if not targets:
                return 0
            sock = self._sock
            if sock is None:
                with self._lock:
                    if self._sock is None:
                        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                        s.setblocking(False)
                        self._sock = s
                    sock = self._sock
            sent = 0
            for path in targets:
                try:
                    sock.sendto(b"w", path)
                    sent += 1
                except ConnectionRefusedError:  # its runner is gone without removing it
                    self._remove_stale(path)
                except OSError:  # full buffer (the runner is busy), removed meanwhile, ...
                    pass
            return sent
        except Exception:  # never let a wake-up break an enqueue
            log.debug("wake-up not sent", exc_info=True)
            return 0

    def _remove_stale(self, path: str) -> None:
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
                log.info("removed a stale wake-up socket: %s", path)
                os.rmdir(self.dir)  # if it was the last one (a runner binding now makes it again)
        except OSError:
            pass
        self._listing = (-1, 0.0, ())

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class Listener:
    """The receiving side: one per runner, shared by its workers."""

    def __init__(self, queue_file: str | os.PathLike, queue_name: str):
        self.dir = wake_dir(queue_file)
        self.prefix = queue_prefix(queue_name)
        self.path: str | None = None
        #: Bumped for every batch of wake-ups received.
        self.generation = 0
        #: How many workers are waiting in ``wait`` right now.
        self.waiting = 0
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def listening(self) -> bool:
        return self._thread is not None and not self._stopping

    def start(self) -> bool:
        """Bind the socket and start the listener thread; False (and polling
        only) if the wake directory cannot be used."""
        if self._thread is not None or self.dir is None:
            return self._thread is not None
        path = os.path.join(self.dir, f"{self.prefix}.{os.getpid()}.{uuid.uuid4().hex[:8]}{SUFFIX}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for _attempt in range(3):
            if not _usable(self.dir, create=True):
                sock.close()
                log.warning("wake-ups off (polling only): %s is not a usable directory", self.dir)
                return False
            try:
                sock.bind(path)
                break
            except FileNotFoundError:  # the last runner removed the directory meanwhile
                continue
            except OSError as exc:
                sock.close()
                log.warning("wake-ups off (polling only): cannot bind %s: %s", path, exc)
                return False
        else:
            sock.close()
            return False
        sock.setblocking(False)
        self._sock, self.path, self._stopping = sock, path, False
        self._thread = threading.Thread(target=self._run, name="erpq-wake", daemon=True)
        self._thread.start()
        return True

    def _drain(self) -> int:
        got = 0
        while True:
            try:
                self._sock.recv(16)
                got += 1
            except (BlockingIOError, InterruptedError):
                return got

    def _bump(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def _run(self) -> None:
        poller = select.poll()  # not select(): no limit on the descriptor's number
        poller.register(self._sock, select.POLLIN)
        try:
            while not self._stopping:
                with self._cond:
                    # Nobody to wake: leave the datagrams in the buffer.
                    self._cond.wait_for(lambda: self.waiting or self._stopping)
                if self._stopping:
                    break
                if self._drain():  # sent while nobody waited, or just now
                    self._bump()
                    continue
                # The timeout is the stop check, should the stop's own wake-up be lost.
                poller.poll(RELIST_S * 1000)
        except OSError:
            if not self._stopping:
                log.exception("wake-up listener failed (polling only from now)")
        finally:
            self._stopping = True
            with self._cond:
                self._cond.notify_all()

    def wait(self, seen: int, timeout: float, stop_flag: threading.Event | None = None) -> bool:
        """Wait up to ``timeout`` seconds for a generation other than ``seen``
        (read before the caller's last dequeue); True if one came."""
        with self._cond:
            if self.generation != seen:
                return True
            if not self._stopping:
                self.waiting += 1
                self._cond.notify_all()  # the listener may be paused
                try:
                    self._cond.wait_for(lambda: self.generation != seen or self._stopping
                                        or (stop_flag is not None and stop_flag.is_set()), timeout)
                finally:
                    self.waiting -= 1
                return self.generation != seen
        # Stopped or failed: a plain poll interval, as without wake-ups.
        if stop_flag is not None:
            stop_flag.wait(timeout)
        else:
            time.sleep(timeout)
        return False

    def stop(self) -> None:
        """Wake every waiting worker, stop the thread, remove the socket."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        with self._cond:
            self._cond.notify_all()
        try:
            poke = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                poke.setblocking(False)
                poke.sendto(b"w", self.path)
            finally:
                poke.close()
        except OSError:
            pass
        thread.join(timeout=2 * RELIST_S + 1)
        self._sock.close()
        for remove, target in ((os.unlink, self.path), (os.rmdir, self.dir)):  # the last one out
            try:
                remove(target)
            except OSError:
                pass
