"""Lab results: LOINC catalogue, unit normalisation and plausibility limits, one row at a time.

The row functions take one exported row (a mapping of column name to string, as a CSV reader
or a Spark ``Row.asDict()`` yields) and return either a typed result or a :class:`RowError`
with a stable reason code, so a Spark task can route every input to silver or to quarantine
without raising. Nothing here needs pandas or Spark.

A row that cannot be read (no patient, no number, a unit that cannot be converted, no time) is
a :class:`RowError`. A row that reads fine but is implausible (a LOINC outside the catalogue, a
value outside the catalogue's limits) reaches silver: the labs gate of ``expectations/``
(``labs_known_loinc``, ``labs_value_within_limits``) holds it back from promotion, with the
catalogue (:data:`cardiolake.domain.LAB_CATALOGUE`) as its reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

# the catalogue is domain vocabulary (cardiolake.domain); re-exported for the row functions' callers
from cardiolake.domain import LAB_CATALOGUE as LAB_CATALOGUE
from cardiolake.domain import LabAnalyte as LabAnalyte
from cardiolake.domain import normalize_unit as normalize_unit

#: Stable reason codes of rejected rows, shared by every tabular source (quarantine.reason).
RowErrorReason = Literal[
    "missing_patient",
    "unknown_patient",  # set by the caller: the patient key is not in the patient index
    "unknown_unit",
    "unparseable_value",
    "unparseable_time",
    "missing_reader",
    "unknown_triage",
    "unparseable_finding",
]


@dataclass(frozen=True)
class RowError:
    """Why one tabular row cannot be promoted to silver.

    Attributes:
        reason: a stable machine-readable code (see :data:`RowErrorReason`).
        detail: a short human explanation; never contains names, birth dates or MRNs.
        row_id: the row's own identifier (specimen, note or label id) when it has one.
    """

    reason: RowErrorReason
    detail: str
    row_id: str | None = None


@dataclass(frozen=True)
class LabResult:
    """One lab value in its canonical unit, as the silver ``labs`` table stores it.

    Attributes:
        specimen_id: the exporting system's result id (empty when the export has none).
        loinc: the LOINC code.
        analyte: the catalogue's display name (empty for a LOINC outside the catalogue).
        value: the value in the canonical unit (as reported for an unknown LOINC).
        unit: the canonical unit (as reported for an unknown LOINC).
        draw_time: when the specimen was drawn (naive; aware inputs are converted to UTC).
        original_value: the value as reported, kept for audit.
        original_unit: the unit as reported, kept for audit.
    """

    specimen_id: str
    loinc: str
    analyte: str
    value: float
    unit: str
    draw_time: datetime
    original_value: float
    original_unit: str


_TIME_FORMATS = (
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%Y%m%d%H%M%S",
)


def parse_timestamp(value: Any) -> datetime | None:
    """A timestamp from an export field, or None when it cannot be read.

    ISO 8601 (with or without ``T``, seconds or offset) is the norm; a few site formats are
    accepted too. Aware times are converted to naive UTC so one column never mixes both.

    Args:
        value: a string, or a ``datetime`` already parsed upstream.

    Returns:
        A naive datetime, or None.
    """
    if isinstance(value, datetime):
        parsed: datetime | None = value
    else:
        text = str(value).strip() if value is not None else ""
        parsed = None
        if text:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                for fmt in _TIME_FORMATS:
                    try:
                        parsed = datetime.strptime(text, fmt)
                        break
                    except ValueError:
                        continue
    if parsed is not None and parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def parse_number(value: Any) -> float | None:
    """A finite float from an export field, or None (blank, text, censored ``<5``, NaN)."""
    if isinstance(value, bool):  # bool is an int subclass, never a lab value
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip() if value is not None else ""
        try:
            number = float(text)
        except ValueError:
            return None
    return number if math.isfinite(number) else None


def text_field(row: Mapping[str, Any], name: str) -> str:
    """A field as stripped text; missing and None become the empty string."""
    value = row.get(name)
    return "" if value is None else str(value).strip()


def normalize_lab(
    row: Mapping[str, Any], *, catalogue: Mapping[str, LabAnalyte] = LAB_CATALOGUE
) -> LabResult | RowError:
    """Read one exported lab row and convert its value to the canonical unit.

    Args:
        row: one row with ``mrn``, ``loinc``, ``value``, ``unit``, ``draw_time`` and
            optionally ``specimen_id`` (extra columns are ignored).
        catalogue: the analytes accepted, keyed by LOINC code.

    Returns:
        The normalised result, or a :class:`RowError` whose reason is one of
        ``missing_patient``, ``unparseable_value``, ``unknown_unit`` or ``unparseable_time``.
        Unknown LOINC codes and values outside the limits are results (see the module doc).

    Example:
        >>> r = normalize_lab({"mrn": "1", "loinc": "2160-0", "value": "88.42",
        ...                    "unit": "umol/L", "draw_time": "2024-01-02T08:00:00"})
        >>> round(r.value, 3), r.unit
        (1.0, 'mg/dL')
    """
    row_id = text_field(row, "specimen_id") or None
    if not text_field(row, "mrn"):
        return RowError("missing_patient", "no MRN on the lab row", row_id)
    loinc = text_field(row, "loinc")
    analyte = catalogue.get(loinc)
    name = analyte.name if analyte else f"LOINC {loinc}"
    value = parse_number(row.get("value"))
    if value is None:
        return RowError(
            "unparseable_value", f"{name} value {row.get('value')!r} is no number", row_id
        )
    unit = text_field(row, "unit")
    canonical = value if analyte is None else analyte.to_canonical(value, unit)
    if canonical is None:
        return RowError("unknown_unit", f"{name} unit {unit!r} is not accepted", row_id)
    draw_time = parse_timestamp(row.get("draw_time"))
    if draw_time is None:
        return RowError(
            "unparseable_time", f"draw time {row.get('draw_time')!r} cannot be read", row_id
        )
    return LabResult(
        specimen_id=row_id or "",
        loinc=loinc,
        analyte=analyte.name if analyte else "",
        value=canonical,
        unit=analyte.unit if analyte else unit,
        draw_time=draw_time,
        original_value=value,
        original_unit=unit,
    )
