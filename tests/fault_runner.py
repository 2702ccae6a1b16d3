"""``python -m fault_runner --config X queue work``: the erpq CLI with the fault
tests' jobs registered (PYTHONPATH=tests); ERPQ_FAULTS_PERIODIC=1 adds their
periodic tasks.

Under libfaketime (the clock test) ``time.sleep`` fails with EINVAL once the
clock is offset: libfaketime shifts the absolute deadline of Python's
``clock_nanosleep`` on the monotonic clock, which a real clock step never
touches. There, sleeps wait on an Event instead (the monotonic clock, like a
real step leaves them)."""

import os
import sys
import threading
import time

if os.environ.get("FAKETIME_TIMESTAMP_FILE"):
    time.sleep = lambda seconds: threading.Event().wait(seconds) and None

import fault_jobs
from erpq.cli import main

fault_jobs.register()
if os.environ.get("ERPQ_FAULTS_PERIODIC") == "1":
    fault_jobs.register_periodic()
sys.exit(main(sys.argv[1:]))
