"""The configured Huey with every erpq job and periodic task registered.

    huey_consumer erpq.tasks.huey -w 4 -k thread

The config is found as ``erpq.config.find_config`` says (``ERPQ_CONFIG`` or
``./config.toml``). The consumer it runs is erpq's (heartbeats, recovery of
dead runners' work, periodic ticks from config), through ``huey.create_consumer``.
"""

from .runtime import current

runtime = current()
huey = runtime.huey
