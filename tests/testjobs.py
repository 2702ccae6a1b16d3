"""Jobs used by the runtime and ops tests, registered at import (the registry is global).

State lives in module globals: these jobs run in the test process (manual
``huey.execute`` or an ``EmbeddedRunner``); ``reset()`` clears it between tests.
"""

from __future__ import annotations

import threading

from erpq.runtime import job

ECHOED: list = []
FLAKY = {"fail": True}
BLOCKS: dict[str, tuple[threading.Event, threading.Event]] = {}


def reset() -> None:
    ECHOED.clear()
    FLAKY["fail"] = True
    for _started, release in BLOCKS.values():
        release.set()
    BLOCKS.clear()


def block(key: str) -> tuple[threading.Event, threading.Event]:
    """(started, release) events of a TestBlock job with this key."""
    return BLOCKS.setdefault(key, (threading.Event(), threading.Event()))


@job("TestEcho")
def echo_job(x=None, tenant_id=None):
    ECHOED.append(x)
    return x


@job("TestFail", retries=1)
def fail_job(x=None):
    raise ValueError(f"boom {x}")


@job("TestFailNow")
def fail_now_job(x=None):
    raise RuntimeError(f"broken {x}")


@job("TestFlaky")
def flaky_job(x=None):
    if FLAKY["fail"]:
        raise ValueError(f"flaky {x}")
    ECHOED.append(("flaky", x))


@job("TestMaybeFail")
def maybe_fail_job(i):
    if i % 2:
        raise ValueError(f"odd {i}")
    ECHOED.append(i)


@job("TestBlock")
def block_job(key):
    started, release = block(key)
    started.set()
    if not release.wait(30):
        raise TimeoutError(f"TestBlock {key} was never released")
    ECHOED.append(key)


@job("TestFailDelayed", retries=1, retry_delay=60)
def fail_delayed_job(x=None):
    raise ValueError(f"later {x}")
