"""Errors raised by :mod:`cardiolake.lake`.

The delta-rs commit runs in a Spark-managed Python worker, so its exceptions reach the caller
wrapped in a Spark error; :func:`reraise_lake_error` unwraps them by class name.
"""

from __future__ import annotations

from typing import NoReturn


class LakeError(Exception):
    """Base class of the lake's own errors."""


class TableNotFoundError(LakeError, FileNotFoundError):
    """No Delta table at the expected location."""


class TableExistsError(LakeError, FileExistsError):
    """A write with ``mode="error"`` found the table already there."""


class SchemaMismatchError(LakeError, ValueError):
    """The DataFrame's columns or types differ from the table's."""


class CommitConflictError(LakeError, RuntimeError):
    """The table changed between the read a write depends on and its commit; retry the job."""


_WRAPPED: tuple[type[LakeError], ...] = (
    CommitConflictError,
    TableExistsError,
    SchemaMismatchError,
    TableNotFoundError,
)


def reraise_lake_error(exc: BaseException) -> NoReturn:
    """Re-raise a lake error found inside a Spark exception's message, else ``exc`` itself.

    Args:
        exc: the exception a Spark action raised.

    Raises:
        LakeError: the unwrapped error, chained to ``exc``.
        BaseException: ``exc`` when it wraps no lake error.
    """
    text = str(exc)
    for cls in _WRAPPED:
        marker = f"{cls.__name__}: "
        at = text.rfind(marker)
        if at >= 0:
            message = text[at + len(marker) :].splitlines()[0].strip()
            raise cls(message) from exc
    raise exc
