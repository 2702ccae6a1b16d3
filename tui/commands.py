"""The ``:`` command line (k9s style): parse what was typed into one console
command. Pure functions, so the grammar is tested without a terminal.

    :failed  :workflows  :webhooks  :8      jump to a view or panel (key, title, unique prefix, tab number)
    :retry --task NAME | --all | ID...      retry failed jobs (asks first, with the count)
    :run NAME  :pause NAME  :resume NAME    a periodic task
    :filter TEXT                            filter the current list (":filter" alone clears)
    :alerts  :help  :undo  :refresh  :q
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

WORDS = ("alerts", "help", "undo", "refresh", "quit", "q", "retry", "run", "pause", "resume", "filter")


@dataclass
class Command:
    verb: str  # view | alerts | help | undo | refresh | quit | retry | run | pause | resume | filter
    target: str = ""  # a view key, a task name, a filter text
    ids: list[int] = field(default_factory=list)
    task: str | None = None
    all: bool = False


class CommandError(ValueError):
    """Bad command line; the message is one line for the message bar."""


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def find_view(name: str, views: list[tuple[str, str]], tabs: list[str]) -> str:
    """The key of the view ``name`` names: its key, its title, a unique prefix
    of either, or its tab number. ``views`` is ``[(key, title)]``."""
    if name.isdigit() and 1 <= int(name) <= len(tabs):
        return tabs[int(name) - 1]
    n = _norm(name)
    if not n:
        raise CommandError("type a view name after ':'")
    exact = [k for k, t in views if n in (_norm(k), _norm(t))]
    if exact:
        return exact[0]
    prefix = [k for k, t in views if _norm(k).startswith(n) or _norm(t).startswith(n)]
    if len(prefix) == 1:
        return prefix[0]
    if prefix:
        raise CommandError(f":{name} is ambiguous: {', '.join(prefix)}")
    raise CommandError(f"unknown command or view :{name} (views: {', '.join(k for k, _ in views)}; "
                       f"commands: {', '.join(w for w in WORDS if w != 'q')})")


def parse(line: str, views: list[tuple[str, str]], tabs: list[str]) -> Command:
    line = line.strip().removeprefix(":").strip()
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise CommandError(f"cannot read the command line: {exc}") from None
    if not words:
        raise CommandError("empty command (try :failed, :retry --task NAME, :help)")
    verb, rest = words[0].lower(), words[1:]
    if verb in ("q", "quit", "q!"):
        return Command("quit")
    if verb in ("alerts", "help", "undo", "refresh"):
        if rest:
            raise CommandError(f":{verb} takes no arguments")
        return Command(verb)
    if verb == "filter":
        return Command("filter", target=" ".join(rest))
    if verb in ("run", "pause", "resume"):
        if len(rest) != 1:
            raise CommandError(f":{verb} takes one periodic task name, e.g. :{verb} erp:check-system-health")
        return Command(verb, target=rest[0])
    if verb == "retry":
        cmd = Command("retry")
        it = iter(rest)
        for word in it:
            if word == "--all":
                cmd.all = True
            elif word == "--task":
                cmd.task = next(it, None)
                if not cmd.task:
                    raise CommandError(":retry --task needs a task name")
            elif word.isdigit():
                cmd.ids.append(int(word))
            else:
                raise CommandError(f":retry: unexpected {word!r} (use ID..., --all or --task NAME)")
        if cmd.ids and (cmd.all or cmd.task):
            raise CommandError(":retry takes IDs or --all/--task, not both")
        if not (cmd.ids or cmd.all or cmd.task):
            raise CommandError(":retry needs IDs, --all or --task NAME")
        return cmd
    return Command("view", target=find_view(line, views, tabs))
