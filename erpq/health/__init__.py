"""System health: ``erp:check-system-health`` (host and per-tenant readings).

- ``capability``: the ``Capability`` object and the ``[health]`` settings;
- ``service``: taking a reading and the periodic task;
- ``ops``: the operators' reads and the check action (``ops.health``);
- ``cli``: ``erpq health``.
"""
