"""Retry of commits that lost a race: re-read the table, re-plan, commit again.

A merge plans against one table version (which keys exist, which files hold them) and commits
only on top of that version. When another writer commits first, the plan is stale and the
commit fails with :class:`~cardiolake.lake.CommitConflictError`; planning again from the new
version and committing is then always correct, so the lake does it a bounded number of times.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cardiolake.lake._errors import CommitConflictError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Names of the exceptions Delta Spark raises when a concurrent commit invalidates a
#: transaction (matched by name: they reach Python wrapped in Py4J / Spark errors).
NATIVE_CONFLICTS = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "MetadataChangedException",
    "ProtocolChangedException",
)


@dataclass(frozen=True)
class CommitRetry:
    """How often and how patiently a conflicting commit is re-planned and retried.

    Attributes:
        attempts: tries in all (1 = no retry).
        backoff_seconds: wait before the first retry; doubled for each further one.
        max_backoff_seconds: upper bound of one wait.
        jitter: spread each wait uniformly over [wait/2, wait] so writers that collided once
            do not collide again in lockstep.
    """

    attempts: int = 5
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 10.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.backoff_seconds < 0 or self.max_backoff_seconds < 0:
            raise ValueError("backoff times must not be negative")

    def wait(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        base = float(min(self.backoff_seconds * 2 ** (retry - 1), self.max_backoff_seconds))
        return base * random.uniform(0.5, 1.0) if self.jitter else base


def is_commit_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` says a concurrent commit won the race (ours may be re-planned).

    Args:
        exc: what a merge or optimize raised.

    Returns:
        True for :class:`CommitConflictError`, delta-rs's ``CommitFailedError`` and Delta
        Spark's concurrent-modification exceptions.
    """
    if isinstance(exc, CommitConflictError):
        return True
    if type(exc).__name__ == "CommitFailedError":
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(name in text for name in NATIVE_CONFLICTS)


def retry_on_conflict(
    attempt: Callable[[], T],
    retry: CommitRetry,
    *,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``attempt`` (which must re-read the table and re-plan) until it commits.

    Args:
        attempt: one full plan-and-commit; called again after each conflict.
        retry: bounds and backoff.
        what: the table and operation, for the log.
        sleep: the wait function (tests pass a no-op).

    Returns:
        What the successful attempt returned.

    Raises:
        CommitConflictError: every attempt conflicted (or the last one raised another
            conflict error, re-raised as this type).
    """
    for number in range(1, retry.attempts + 1):
        try:
            return attempt()
        except Exception as exc:
            if not is_commit_conflict(exc):
                raise
            if number == retry.attempts:
                if isinstance(exc, CommitConflictError):
                    raise
                raise CommitConflictError(f"{what}: {exc}") from exc
            pause = retry.wait(number)
            logger.warning(
                "%s: a concurrent commit won (attempt %d of %d); re-planning in %.2f s",
                what, number, retry.attempts, pause,
            )  # fmt: skip
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover
