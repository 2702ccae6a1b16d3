"""Running queued jobs in the test's own thread, without a runner."""

from __future__ import annotations

from erpq.runtime import Runtime


def drain(rt: Runtime, limit: int = 10_000) -> int:
    """Take and execute queued tasks in this thread until the queue is empty (or
    ``limit`` ran); returns how many ran. Scheduled (delayed) tasks stay put.

    Checking the count first avoids Redis's blocking dequeue on an empty queue;
    the last claim is released as a worker's next dequeue (or shutdown) would.
    """
    done = 0
    while done < limit and rt.huey.pending_count():
        task = rt.huey.dequeue()
        if task is None:
            break
        rt.huey.execute(task)
        done += 1
    rt.huey.storage.release_pending()
    return done
