"""Process-supervisor files for production: the scheduler and workers must always run.

``erpq deploy systemd`` / ``erpq deploy supervisor`` print a unit or program
for this install (this Python, this config, this working directory), ready to
drop into /etc/systemd/system/erpq-worker.service or /etc/supervisor/conf.d/.
Several hosts may each run one: periodic ticks fire once across all of them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SYSTEMD = """\
# /etc/systemd/system/erpq-worker.service
# systemctl daemon-reload && systemctl enable --now erpq-worker
[Unit]
Description=erpq runner (scheduler + workers)
After=network-online.target redis-server.service postgresql.service mariadb.service
Wants=network-online.target

[Service]
Type=simple
User={user}
WorkingDirectory={cwd}
Environment=ERPQ_CONFIG={config}
ExecStartPre={erpq} db upgrade
ExecStart={consumer} erpq.tasks.huey --workers {workers} --worker-type thread
# SIGINT is Huey's graceful stop: running jobs finish, nothing is lost.
KillSignal=SIGINT
TimeoutStopSec=60
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

SUPERVISOR = """\
; /etc/supervisor/conf.d/erpq-worker.conf
; supervisorctl reread && supervisorctl update
[program:erpq-worker]
command={consumer} erpq.tasks.huey --workers {workers} --worker-type thread
directory={cwd}
environment=ERPQ_CONFIG="{config}"
user={user}
autostart=true
autorestart=true
; SIGINT is Huey's graceful stop: running jobs finish, nothing is lost.
stopsignal=INT
stopwaitsecs=60
redirect_stderr=true
stdout_logfile={cwd}/var/log/erpq-worker.out
"""


def render(kind: str, config: str | None = None) -> str:
    from .config import find_config, load

    cfg_path = Path(find_config(config)).resolve()
    settings = load(cfg_path)
    bindir = Path(sys.executable).parent
    values = {
        "user": os.environ.get("SUDO_USER") or os.environ.get("USER") or "erpq",
        "cwd": str(Path.cwd()),
        "config": str(cfg_path),
        "erpq": shutil.which("erpq", path=str(bindir)) or f"{bindir}/erpq",
        "consumer": shutil.which("huey_consumer", path=str(bindir)) or f"{bindir}/huey_consumer",
        "workers": settings.queue.workers,
    }
    return (SYSTEMD if kind == "systemd" else SUPERVISOR).format(**values)
