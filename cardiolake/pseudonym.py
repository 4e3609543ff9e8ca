"""Pseudonymous patient keys: HMAC-SHA256 of the MRN under a secret held outside the lake.

The key is the only patient identifier allowed past ingestion. Without the secret it cannot
be reversed or recomputed from an MRN, so leaked tables do not re-identify patients.
"""

from __future__ import annotations

import hashlib
import hmac

#: Environment variable the CLI reads the secret from (code deeper never reads the env).
SECRET_ENV = "CARDIOLAKE_PSEUDONYM_SECRET"
#: Used only when no secret is configured: fine for the synthetic cohort, never for real data.
DEVELOPMENT_SECRET = "cardiolake-development-secret"
KEY_HEX_CHARS = 32  # 128 bits: collision-free for any hospital population


def patient_key(mrn: str, secret: str) -> str:
    """The pseudonymous key of a patient.

    Args:
        mrn: the hospital's medical record number (whitespace and leading zeros matter).
        secret: the HMAC secret.

    Returns:
        32 lowercase hex characters.

    Raises:
        ValueError: when the MRN or the secret is empty.

    Example:
        >>> patient_key("12345678", "s3cret")[:8]
        '0aef580e'
    """
    mrn = mrn.strip()
    if not mrn:
        raise ValueError("empty MRN cannot be pseudonymised")
    if not secret:
        raise ValueError("empty pseudonymisation secret")
    digest = hmac.new(secret.encode(), mrn.encode(), hashlib.sha256).hexdigest()
    return digest[:KEY_HEX_CHARS]
