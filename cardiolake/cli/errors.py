"""User errors at the CLI edge: one line naming the problem and the fix, exit status 2.

A command raises :class:`UserError` (or a check below raises it) for a mistake the user can
fix: a missing folder, a lake never ingested, features never applied, a bad option value.
:func:`cardiolake.cli.main` prints ``error: <problem>: <fix>`` on stderr and exits 2; only
``-vv`` shows a traceback. :func:`user_message` also recognises the errors third-party layers
raise for the same mistakes (Feast's "not found" errors, a missing Delta table, an
unreachable Redis), so commands need not catch them one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Exit status of a user's mistake (the same as a click usage error).
USER_ERROR = 2
#: Exit status of an unexpected failure (a bug or an environment problem).
FAILURE = 1

INGEST_FIRST = "run `cardiolake ingest --landing <folder> --lake <lake>` first, or pass --lake"
APPLY_FIRST = "run `cardiolake features apply --lake <lake>` first"


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit status 2.

    Args:
        problem: what is wrong, naming the path, value or option.
        fix: what to do about it (a command to run, an option to pass).
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem, fix)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}" if self.fix else self.problem


def require_dir(path: Path, *, option: str, fix: str) -> Path:
    """The folder ``path`` if it exists.

    Raises:
        UserError: it does not exist or is a file.
    """
    if not Path(path).exists():
        raise UserError(f"{option} {path}: no such folder", fix)
    if not Path(path).is_dir():
        raise UserError(f"{option} {path}: a file, not a folder", fix)
    return path


def require_file(path: Path | None, *, option: str, fix: str = "check the path") -> None:
    """Check an optional file option (``--config``) names an existing file.

    Raises:
        UserError: it does not exist or is a folder.
    """
    if path is not None and not Path(path).is_file():
        what = "a folder, not a file" if Path(path).is_dir() else "no such file"
        raise UserError(f"{option} {path}: {what}", fix)


def require_lake(root: Path, *, need: tuple[str, ...] = ()) -> list[Any]:
    """The lake's Delta tables, when the lake exists and holds ``need`` (``layer.name``).

    Args:
        root: the lake root.
        need: tables the command reads; each must exist.

    Returns:
        Every table of the lake.

    Raises:
        UserError: no lake at ``root``, an empty one, or a needed table is missing.
    """
    from cardiolake import lake

    if "://" not in str(root) and not Path(root).is_dir():
        raise UserError(f"no lake at {root}", INGEST_FIRST)
    found = lake.list_tables(root)
    if not found:
        raise UserError(f"the lake {root} holds no Delta tables", INGEST_FIRST)
    names = {str(t) for t in found}
    missing = [t for t in need if t not in names]
    if missing:
        raise UserError(f"the lake {root} has no {', '.join(missing)}", INGEST_FIRST)
    return found


def require_applied(feast_dir: Path) -> None:
    """Check ``cardiolake features apply`` registered the features under ``feast_dir``.

    Raises:
        UserError: no Feast registry there.
    """
    if not (Path(feast_dir) / "registry.db").is_file():
        raise UserError(f"no features registered under {feast_dir}", APPLY_FIRST)


def settings_from(build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a settings builder, turning a bad ``--config`` file or value into a UserError.

    Raises:
        UserError: the YAML does not parse, names an unknown setting, or a value is invalid.
    """
    import yaml

    try:
        return build(*args, **kwargs)
    except yaml.YAMLError as err:
        raise UserError(
            f"--config does not parse as YAML ({_first_line(err)})", "fix the file"
        ) from None
    except (ValueError, TypeError) as err:
        raise UserError(
            f"invalid settings: {_first_line(err)}", "fix the option or --config"
        ) from None


def user_message(exc: BaseException) -> str | None:
    """The one-line message of a user's mistake, or None for an unexpected failure.

    Args:
        exc: what a command raised.
    """
    if isinstance(exc, UserError):
        return str(exc)
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith("feast") and name in _FEAST_NOT_FOUND:
        return f"{_first_line(exc)}: {APPLY_FIRST}"
    if name == "SecretError":  # cardiolake.pseudonym: a missing, short or unsafe secret
        return _first_line(exc)
    if name == "TableNotFoundError":  # cardiolake.lake's and delta-rs's
        return f"{_first_line(exc)}: {INGEST_FIRST}"
    if module.startswith("redis") and name in ("ConnectionError", "TimeoutError"):
        return (
            f"cannot reach Redis ({_first_line(exc)}): start `redis-server` or pass "
            "--redis-url HOST:PORT, or use --online sqlite"
        )
    return None


_FEAST_NOT_FOUND = frozenset(
    {
        "FeatureServiceNotFoundException",
        "FeatureViewNotFoundException",
        "EntityNotFoundException",
        "DataSourceObjectNotFoundException",
        "FeastProjectNotFoundException",
    }
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
