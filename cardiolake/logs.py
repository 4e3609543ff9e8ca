"""Library logging: one helper to get a logger and one to set verbosity at the CLI edge."""

from __future__ import annotations

import logging
import warnings

from rich.logging import RichHandler


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``cardiolake`` hierarchy (module loggers use ``__name__``)."""
    return logging.getLogger(name)


def configure_logging(verbosity: int = 0) -> None:
    """Route library logs to stderr through rich; 0 = WARNING, 1 = INFO, 2+ = DEBUG."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
    # libraries that set their own loggers' levels (Great Expectations at INFO) still stop here
    handler.setLevel(level)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("py4j", "matplotlib", "PIL", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if verbosity <= 0:
        # PySpark warns for every plain Python UDF without pandas type hints (ours return one
        # string per row on purpose); nothing a user can act on
        warnings.filterwarnings(
            "ignore", message="Cannot infer the eval type from type hints", category=UserWarning
        )
