"""The domain vocabulary every stage shares: standard leads, mobile lead sets, findings.

Hospital-facing code (ingestion, training, serving) and the synthetic cohort generator both
import these names from here, so no stage depends on the generator.
"""

from __future__ import annotations

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
