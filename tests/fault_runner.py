"""``python -m fault_runner --config X queue work``: the erpq CLI with the fault
tests' jobs registered (PYTHONPATH=tests); ERPQ_FAULTS_PERIODIC=1 adds their
periodic tasks."""

import os
import sys

import fault_jobs
from erpq.cli import main

fault_jobs.register()
if os.environ.get("ERPQ_FAULTS_PERIODIC") == "1":
    fault_jobs.register_periodic()
sys.exit(main(sys.argv[1:]))
