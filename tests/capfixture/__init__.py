"""A tiny capability written as a test fixture: one job, one periodic task, one
settings key, one CLI command, one Ops read and one console panel. Loaded with
``ERPQ_CAPABILITIES=capfixture.capability`` (tests/ on the path); no core file
names it."""
