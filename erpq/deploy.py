"""Process-supervisor files for production, following the config in force.

``erpq deploy systemd`` / ``erpq deploy supervisor`` print a unit or program
for this install (this Python, this config, this working directory, a user
that exists), ready for /etc/systemd/system/ or /etc/supervisor/conf.d/:

- the runner is ``erpq queue work``: SIGTERM (what systemd, supervisord,
  Docker and Kubernetes send) is a graceful stop: running jobs finish (up to
  ``runner.shutdown_timeout_s``), claims and locks are released;
- the worker count is ``queue.workers``, the stop timeout is
  ``runner.shutdown_timeout_s`` plus a margin;
- ``erpq db upgrade`` runs before every start;
- ``--split`` gives one scheduler runner and N worker runners with periodic
  tasks off (``--no-periodic``), for hosts that scale workers separately;
- the systemd unit is hardened (NoNewPrivileges, ProtectSystem=strict with
  the working directory writable, PrivateTmp, ...).

Logs go to stderr (the journal, or supervisord's log), one format.
Several hosts may each run one: periodic ticks fire once across all of them.
"""

from __future__ import annotations

import os
import pwd
import shlex
import sys
from pathlib import Path

HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={cwd}
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictRealtime=yes"""

SYSTEMD = """\
# /etc/systemd/system/{name}.service
# systemctl daemon-reload && systemctl enable --now {name}
[Unit]
Description={description}
After=network-online.target redis-server.service postgresql.service mariadb.service
Wants=network-online.target

[Service]
Type=simple
User={user}
WorkingDirectory={cwd}
Environment=ERPQ_CONFIG={config}
ExecStartPre={erpq} db upgrade
ExecStart={erpq} queue work --workers {workers}{extra}
# SIGTERM is a graceful stop: running jobs finish (runner.shutdown_timeout_s = {timeout:g}s).
KillSignal=SIGTERM
TimeoutStopSec={stop_s}
Restart=always
RestartSec=2
{hardening}

[Install]
WantedBy=multi-user.target
"""

SUPERVISOR = """\
; /etc/supervisor/conf.d/{name}.conf
; supervisorctl reread && supervisorctl update
[program:{name}]
command=/bin/sh -c "{erpq_q} db upgrade && exec {erpq_q} queue work --workers {workers}{extra}"
directory={cwd}
environment=ERPQ_CONFIG="{config}"
user={user}
numprocs={numprocs}
process_name=%(program_name)s{procname}
autostart=true
autorestart=true
startsecs=5
; SIGTERM is a graceful stop: running jobs finish (runner.shutdown_timeout_s = {timeout:g}s).
stopsignal=TERM
stopwaitsecs={stop_s}
stopasgroup=true
killasgroup=true
; one log format, to stderr; supervisord keeps it in its childlogdir
redirect_stderr=true
stdout_logfile=AUTO
"""


def _user() -> str:
    """A user that exists: whoever runs this (the sudo caller when under sudo)."""
    for name in (os.environ.get("SUDO_USER"), ):
        if name:
            try:
                return pwd.getpwnam(name).pw_name
            except KeyError:
                pass
    return pwd.getpwuid(os.geteuid()).pw_name


def render(kind: str, config: str | None = None, split: bool = False, workers_procs: int = 2,
           user: str | None = None) -> str:
    from .config import ConfigError, find_config, load

    cfg_path = Path(find_config(config)).resolve()
    settings = load(cfg_path)
    user = user or _user()
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"--user {user}: no such user on this host") from None
    bindir = Path(sys.executable).parent
    erpq = str(bindir / "erpq") if (bindir / "erpq").exists() else f"{sys.executable} -m erpq.cli"
    cwd = Path.cwd()
    timeout = settings.runner.shutdown_timeout_s
    base = {
        "user": user, "cwd": str(cwd), "config": str(cfg_path), "erpq": erpq, "erpq_q": shlex.quote(erpq)
        if " " not in erpq else erpq, "timeout": timeout, "stop_s": int(timeout + 15),
        "hardening": HARDENING.format(cwd=cwd),
    }
    layouts = [("erpq-runner", "erpq runner (scheduler + workers)", settings.queue.workers, "", 1)]
    if split:
        layouts = [("erpq-scheduler", "erpq scheduler (fires periodic tasks; runs jobs too)", 1, "", 1),
                   ("erpq-worker", "erpq worker (periodic off)", settings.queue.workers, " --no-periodic",
                    workers_procs)]
    parts = []
    for name, description, workers, extra, procs in layouts:
        values = {**base, "name": name, "description": description, "workers": workers, "extra": extra,
                  "numprocs": procs, "procname": "_%(process_num)02d" if procs > 1 else ""}
        if kind == "systemd":
            if procs > 1:
                values["name"] = f"{name}@"
                values["description"] += " %i"
            parts.append(SYSTEMD.format(**values))
        else:
            parts.append(SUPERVISOR.format(**values))
    return "\n".join(parts)
