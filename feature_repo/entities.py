"""Feast entities of the cardiolake feature repository."""

from __future__ import annotations

from feast import Entity, ValueType

# The patient, by the pseudonymous key ingestion derives from the MRN: every feature view
# joins on it and no identifier beyond it ever reaches Feast.
patient = Entity(
    name="patient",
    join_keys=["patient_key"],
    value_type=ValueType.STRING,
    description="A patient, keyed by the pseudonymous patient_key (HMAC of the MRN).",
    tags={"pii": "pseudonymous"},
)
