"""Pseudonymous patient keys: HMAC-SHA256 of the MRN under a secret held outside the lake.

The key is the only patient identifier allowed past ingestion. Without the secret it cannot
be reversed or recomputed from an MRN, so leaked tables do not re-identify patients.

There is no built-in secret. Real runs pass one (environment at the CLI edge, a secret scope
on Databricks); a development lake without one gets a random secret generated at first use
and kept in a file *beside* the lake (never in a table) that only its owner can read, so a
copied lake folder does not carry the means to recompute its keys. Secrets shorter than
:data:`MIN_SECRET_BYTES` are refused before any input is read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from datetime import timedelta
from pathlib import Path

#: Environment variable the CLI reads the secret from (code deeper never reads the env).
SECRET_ENV = "CARDIOLAKE_PSEUDONYM_SECRET"
#: A marker, not a secret: "no secret configured, use the lake's own random development
#: secret" (:func:`development_secret`). :func:`patient_key` refuses it as a key.
DEVELOPMENT_SECRET = "<development secret of the lake>"
MIN_SECRET_BYTES = 16
KEY_HEX_CHARS = 32  # 128 bits: collision-free for any hospital population


class SecretError(ValueError):
    """The pseudonymisation secret is missing, too short or stored unsafely."""


def check_secret(secret: str | None) -> str:
    """Return ``secret`` when it is usable as an HMAC key, else raise.

    Raises:
        SecretError: for no secret, the development marker, or fewer than
            :data:`MIN_SECRET_BYTES` bytes (UTF-8).
    """
    if secret is None or secret == DEVELOPMENT_SECRET:
        raise SecretError(
            f"no pseudonymisation secret: set {SECRET_ENV} or use the lake's development secret"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise SecretError(
            f"the pseudonymisation secret ({SECRET_ENV}) is empty or shorter than "
            f"{MIN_SECRET_BYTES} bytes; refusing to derive patient keys from it"
        )
    return secret


def development_secret_path(lake_root: Path) -> Path:
    """Where a development lake's secret lives: a hidden file beside the lake folder."""
    root = Path(lake_root).resolve()
    return root.parent / f".{root.name}.pseudonym-secret"


def development_secret(lake_root: Path) -> str:
    """The lake's random development secret, created (mode 0600) at first use.

    Args:
        lake_root: the lake root; the secret file sits beside it.

    Returns:
        64 hex characters (256 random bits).

    Raises:
        SecretError: when the file exists but others may read or write it, or holds a
            secret that is too short.
    """
    path = development_secret_path(lake_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretError(
                f"{path} is readable or writable by others (mode {mode:o}); chmod 600 it"
            ) from None
        return check_secret(path.read_text().strip())
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return check_secret(path.read_text().strip())


def resolve_secret(secret: str | None, lake_root: Path) -> str:
    """The secret to key a lake with: the configured one (checked) or the lake's own.

    Args:
        secret: the configured secret; None or :data:`DEVELOPMENT_SECRET` selects the lake's
            random development secret. An empty string is a configuration error, not "unset".
        lake_root: the lake root.

    Raises:
        SecretError: see :func:`check_secret` and :func:`development_secret`.
    """
    if secret is None or secret == DEVELOPMENT_SECRET:
        return development_secret(lake_root)
    return check_secret(secret)


def patient_key(mrn: str, secret: str) -> str:
    """The pseudonymous key of a patient.

    Args:
        mrn: the hospital's medical record number (whitespace and leading zeros matter).
        secret: the HMAC secret (at least :data:`MIN_SECRET_BYTES` bytes).

    Returns:
        32 lowercase hex characters.

    Raises:
        ValueError: when the MRN is empty; :class:`SecretError` for an unusable secret.

    Example:
        >>> patient_key("12345678", "a-long-enough-test-secret")[:8]
        '0fb1c6b3'
    """
    mrn = mrn.strip()
    if not mrn:
        raise ValueError("empty MRN cannot be pseudonymised")
    check_secret(secret)
    digest = hmac.new(secret.encode(), mrn.encode(), hashlib.sha256).hexdigest()
    return digest[:KEY_HEX_CHARS]


def date_shift(key: str, secret: str, max_days: int) -> timedelta:
    """The per-patient date shift: a whole number of days back, 1 to ``max_days``.

    Every timestamp of one patient moves by the same amount, so intervals (ECG to echo,
    draw to label, exam to note) survive while calendar dates do not; the shift is keyed by
    the pseudonym under the secret, so it cannot be recomputed without the secret. Shifting
    only backwards keeps recent data out of the future.

    Args:
        key: the patient's pseudonymous key (or any stable record key).
        secret: the HMAC secret.
        max_days: the largest shift; 0 disables shifting.
    """
    if max_days <= 0:
        return timedelta(0)
    check_secret(secret)
    digest = hmac.new(secret.encode(), f"date-shift|{key}".encode(), hashlib.sha256).digest()
    return -timedelta(days=1 + int.from_bytes(digest[:8], "big") % max_days)
