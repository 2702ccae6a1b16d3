"""Issue 13, item 3: a job failing for a reason retrying cannot fix fails at once,
with the cause in its failure record (not "out of attempts" after N retries)."""

from __future__ import annotations

import sqlalchemy as sa

from draining import drain
from erpq.models import FailedJob
from erpq.runtime import Permanent, Runtime, job

CALLS: list[str] = []


@job("TestPermanentFail", retries=5)
def permanent_fail_job():
    CALLS.append("permanent")
    raise Permanent("customer 7 has no address: cannot send")


@job("TestUnicodeFail", retries=5)
def unicode_fail_job(text="caf\udce9"):
    CALLS.append("unicode")
    text.encode("utf-8")


@job("TestTransientFail", retries=1)
def transient_fail_job():
    CALLS.append("transient")
    raise ConnectionError("try later")


def test_permanent_failures_fail_at_once_with_their_cause(runtime: Runtime):
    CALLS.clear()
    runtime.enqueue("TestPermanentFail")
    runtime.enqueue("TestUnicodeFail")
    runtime.enqueue("TestTransientFail")
    drain(runtime)
    assert CALLS.count("permanent") == 1 and CALLS.count("unicode") == 1
    assert CALLS.count("transient") == 2  # a passing error is still retried
    with runtime.read_session() as s:
        rows = {r.task_name: r for r in s.scalars(sa.select(FailedJob))}
    assert set(rows) == {"TestPermanentFail", "TestUnicodeFail", "TestTransientFail"}
    assert rows["TestPermanentFail"].exception_type == "Permanent"
    assert "no address" in rows["TestPermanentFail"].exception
    assert rows["TestUnicodeFail"].exception_type == "UnicodeEncodeError"
    assert rows["TestPermanentFail"].attempts == 1
