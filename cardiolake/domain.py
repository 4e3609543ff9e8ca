"""The domain vocabulary every stage shares: leads, lead sets, findings, the LOINC catalogue.

Hospital-facing code (ingestion, training, serving) and the synthetic cohort generator both
import these names from here, so no stage depends on the generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Standard 12-lead order used everywhere (and by PTB-XL).
STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip
#: The six limb leads a mobile device may record (any non-empty subset of them).
LIMB_LEADS: tuple[str, ...] = STANDARD_LEADS[:6]
#: Lead sets of the mobile devices: a single-lead patch and a six-lead limb device.
MOBILE_LEAD_SETS: dict[int, tuple[str, ...]] = {
    1: ("I",),
    6: LIMB_LEADS,
}
#: ``device_kind`` of a resting 12-lead cart recording (silver.ecg, gold examples).
RESTING_12LEAD = "resting_12lead"
#: The lead sets a student is evaluated on (a 2-lead device records I and II; a 3-lead one adds
#: III), by lead count.
EVALUATION_LEAD_SETS: dict[int, tuple[str, ...]] = {
    1: ("I",),
    2: ("I", "II"),
    3: ("I", "II", "III"),
    6: LIMB_LEADS,
}
#: Findings behind the triage decision (multi-label), in a fixed order.
FINDINGS: tuple[str, ...] = (
    "reduced_lvef",
    "atrial_fibrillation",
    "bundle_branch_block",
    "lv_hypertrophy",
    "hyperkalaemia",
)


@dataclass(frozen=True)
class LabAnalyte:
    """One analyte of the catalogue.

    Attributes:
        loinc: the LOINC code.
        name: a display name.
        unit: the canonical unit silver stores.
        factors: accepted unit spellings (normalised by :func:`normalize_unit`) mapped to the
            factor that multiplies a value in that unit into the canonical unit.
        low: the lowest value possible in a living patient, canonical unit.
        high: the highest value possible in a living patient, canonical unit.
    """

    loinc: str
    name: str
    unit: str
    factors: Mapping[str, float]
    low: float
    high: float

    def to_canonical(self, value: float, unit: str) -> float | None:
        """The value in the canonical unit, or None when the unit is not accepted."""
        factor = self.factors.get(normalize_unit(unit))
        return None if factor is None else value * factor


def normalize_unit(unit: str) -> str:
    """A unit spelling reduced for lookup: no spaces, lower case, micro sign as ``u``."""
    return unit.strip().replace("\u00b5", "u").replace("\u03bc", "u").replace(" ", "").lower()


def _analyte(
    loinc: str, name: str, unit: str, factors: dict[str, float], low: float, high: float
) -> LabAnalyte:
    table = {normalize_unit(k): v for k, v in factors.items()}
    return LabAnalyte(loinc, name, unit, table, low, high)


# Limits are what a living patient can show, not reference ranges: a value outside them is a
# data error (wrong unit, typo, haemolysed sample), while abnormal-but-real values must pass.
_CREATININE_UMOL_PER_MG_DL = 88.42
_HB_G_DL_PER_MMOL_L = 1.6114  # Dutch/Scandinavian Hb (Fe) in mmol/L
_NTPROBNP_PG_ML_PER_PMOL_L = 8.457  # molar mass of NT-proBNP (1-76), ~8.5 kDa

#: The six analytes of the cohort, keyed by LOINC code. Plain dicts typed as read-only
#: Mappings: a MappingProxyType would not pickle into Spark tasks.
LAB_CATALOGUE: Mapping[str, LabAnalyte] = {
    a.loinc: a
    for a in (
        _analyte(
            "33762-6", "NT-proBNP", "pg/mL",
            {"pg/mL": 1.0, "ng/L": 1.0, "pmol/L": _NTPROBNP_PG_ML_PER_PMOL_L},
            1.0, 100_000.0,
        ),
        _analyte(
            "67151-1", "Troponin T, high-sensitivity", "ng/L",
            {"ng/L": 1.0, "pg/mL": 1.0, "ng/mL": 1000.0, "ug/L": 1000.0},
            1.0, 100_000.0,
        ),
        _analyte(
            "2160-0", "Creatinine", "mg/dL",
            {
                "mg/dL": 1.0,
                "umol/L": 1.0 / _CREATININE_UMOL_PER_MG_DL,
                "mmol/L": 1000.0 / _CREATININE_UMOL_PER_MG_DL,
            },
            0.1, 25.0,
        ),
        _analyte(
            "2823-3", "Potassium", "mmol/L", {"mmol/L": 1.0, "mEq/L": 1.0}, 1.5, 10.0
        ),
        _analyte(
            "718-7", "Hemoglobin", "g/dL",
            {"g/dL": 1.0, "g/L": 0.1, "mmol/L": _HB_G_DL_PER_MMOL_L},
            2.0, 25.0,
        ),
        _analyte(
            "2951-2", "Sodium", "mmol/L", {"mmol/L": 1.0, "mEq/L": 1.0}, 100.0, 180.0
        ),
    )
}  # fmt: skip
