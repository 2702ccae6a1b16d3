"""Retry strategies: how long to wait before the next attempt of a failed job.

A job declares one with ``@job(name, retries=N, retry=Exponential(...))``; the
runtime asks it for the delay each time an attempt fails and schedules the
retry that far ahead (Huey's own ``retry_delay`` is a constant or a plain
multiple). Webhook deliveries use the same objects for their backoff.

- ``Fixed(delay)``: the same delay every time;
- ``Exponential(base, factor, max, jitter)``: ``base * factor**(n-1)``, capped at ``max``;
- ``Delays([5, 300, ...], jitter)``: the n-th delay of a list (the last one repeats).

``jitter`` adds a random fraction of the delay (``0.1``: up to 10 % more), so
retries of many jobs failing together spread out.

A job can also say when to retry: it raises ``RetryAfter(seconds)`` or
``RetryAt(when)`` (e.g. from an HTTP ``Retry-After`` header). That counts as a
failed attempt; the retry is scheduled no sooner than that time (capped at
``max_not_before``, a day by default), nor sooner than the strategy's delay.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

#: A receiver's Retry-After (or a job's RetryAt) is honoured up to this far ahead.
MAX_NOT_BEFORE_S = 86400.0


class Permanent(Exception):
    """A failure that retrying cannot fix (bad data, a refused request): the job
    fails at once, with this message as the cause, whatever its ``retries``."""


#: Exceptions no retry can fix: raised again by the same input every time.
PERMANENT = (Permanent, UnicodeError)


def is_permanent(exc: BaseException | None) -> bool:
    """Whether ``exc`` fails a job at once instead of retrying it."""
    return isinstance(exc, PERMANENT)


class RetryLater(Exception):
    """Base of ``RetryAfter``/``RetryAt``: this attempt failed, retry no sooner than ``seconds()``."""

    def seconds(self, now: float | None = None) -> float:
        raise TypeError(f"{type(self).__name__} must define seconds() (use RetryAfter or RetryAt)")


class RetryAfter(RetryLater):
    """Retry in ``seconds`` (at the earliest)."""

    def __init__(self, seconds: float, message: str = ""):
        self.after = max(0.0, float(seconds))
        super().__init__(message or f"retry after {self.after:g}s")

    def seconds(self, now: float | None = None) -> float:
        return self.after


class RetryAt(RetryLater):
    """Retry at ``when`` (an aware datetime, a naive UTC datetime, or an epoch)."""

    def __init__(self, when: dt.datetime | float, message: str = ""):
        if isinstance(when, dt.datetime):
            when = (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
        self.when = float(when)
        super().__init__(message or f"retry at {dt.datetime.fromtimestamp(self.when, dt.UTC):%Y-%m-%d %H:%M:%S}Z")

    def seconds(self, now: float | None = None) -> float:
        return max(0.0, self.when - (time.time() if now is None else now))


@dataclass(frozen=True)
class Strategy:
    """Base class: ``base_delay(n)`` is the delay before retry ``n`` (1 = the first)."""

    jitter: float = 0.0
    max_not_before: float = MAX_NOT_BEFORE_S

    def base_delay(self, n: int) -> float:
        raise TypeError(f"{type(self).__name__} must define base_delay() (use Fixed, Exponential or Delays)")

    def delay(self, n: int, not_before: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds before retry ``n`` (after ``n`` failed attempts): the base
        delay plus jitter, never sooner than ``not_before`` (capped)."""
        d = float(self.base_delay(max(1, n)))
        if self.jitter:
            d *= 1 + (rng or random).uniform(0, self.jitter)
        if not_before is not None:
            d = max(d, min(not_before, self.max_not_before))
        return d

    def __post_init__(self):
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter!r}")


@dataclass(frozen=True)
class Fixed(Strategy):
    seconds: float = 0.0

    def __init__(self, delay: float, jitter: float = 0.0, max_not_before: float = MAX_NOT_BEFORE_S):
        object.__setattr__(self, "seconds", float(delay))
        object.__setattr__(self, "jitter", jitter)
        object.__setattr__(self, "max_not_before", max_not_before)
        self.__post_init__()

    def base_delay(self, n: int) -> float:
        return self.seconds


@dataclass(frozen=True)
class Exponential(Strategy):
    base: float = 1.0
    factor: float = 2.0
    max: float | None = None

    def __init__(self, base: float = 1.0, factor: float = 2.0, max: float | None = None,
                 jitter: float = 0.0, max_not_before: float = MAX_NOT_BEFORE_S):
        for k, v in (("base", float(base)), ("factor", float(factor)), ("max", max),
                     ("jitter", jitter), ("max_not_before", max_not_before)):
            object.__setattr__(self, k, v)
        self.__post_init__()

    def base_delay(self, n: int) -> float:
        d = self.base * self.factor ** (n - 1)
        return d if self.max is None else min(d, self.max)


@dataclass(frozen=True)
class Delays(Strategy):
    delays: tuple[float, ...] = field(default_factory=tuple)

    def __init__(self, delays: Sequence[float], jitter: float = 0.0, max_not_before: float = MAX_NOT_BEFORE_S):
        if not delays:
            raise ValueError("Delays needs at least one delay")
        object.__setattr__(self, "delays", tuple(float(d) for d in delays))
        object.__setattr__(self, "jitter", jitter)
        object.__setattr__(self, "max_not_before", max_not_before)
        self.__post_init__()

    def base_delay(self, n: int) -> float:
        return self.delays[min(n, len(self.delays)) - 1]


def legacy(retry_delay: float, retry_backoff: float) -> Strategy:
    """The strategy of Huey's ``retry_delay``/``retry_backoff`` pair (backoff 0: constant)."""
    if retry_delay and retry_backoff:
        return Exponential(retry_delay, retry_backoff)
    return Fixed(retry_delay or 0)


def not_before(exc: BaseException | None, now: float | None = None) -> float | None:
    """Seconds a ``RetryLater`` exception asks to wait, else None."""
    return exc.seconds(now) if isinstance(exc, RetryLater) else None
