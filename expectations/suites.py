"""The expectation suites: one builder per gated table, each expectation named for what it guards.

An expectation's gate name (``meta["gate"]``) is what a failing row's quarantine ``reason``
says, so names are stable identifiers: ``<table>_<what is checked>``. Checks on arrays or
groups read the derived columns of :mod:`expectations.derived`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import great_expectations as gx
from great_expectations.expectations.core.expect_column_pair_values_a_to_be_greater_than_b import (
    ExpectColumnPairValuesAToBeGreaterThanB,
)
from great_expectations.expectations.core.expect_column_pair_values_to_be_equal import (
    ExpectColumnPairValuesToBeEqual,
)
from great_expectations.expectations.core.expect_column_values_to_be_between import (
    ExpectColumnValuesToBeBetween,
)
from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
    ExpectColumnValuesToBeInSet,
)
from great_expectations.expectations.expectation import Expectation

from cardiolake import tables
from cardiolake.domain import LAB_CATALOGUE
from expectations.settings import GateSettings


@dataclass(frozen=True)
class Check:
    """One named expectation and the columns that explain a failure in quarantine.

    Attributes:
        name: the gate name (quarantine reason, report row).
        expectation: the Great Expectations expectation.
        detail_columns: columns whose observed values go into the quarantine detail.
    """

    name: str
    expectation: Expectation
    detail_columns: tuple[str, ...]


@dataclass(frozen=True)
class SuiteSpec:
    """The suite of one table.

    Attributes:
        name: the suite name.
        table: the gated table.
        key_column: the column identifying a row (quarantine ``row_id``).
        checks: the named expectations.
    """

    name: str
    table: tables.Table
    key_column: str
    checks: tuple[Check, ...]

    def to_suite(self) -> gx.ExpectationSuite:
        """A Great Expectations suite holding the checks' expectations (build one per context)."""
        suite = gx.ExpectationSuite(name=self.name)
        for check in self.checks:
            suite.add_expectation(check.expectation)
        return suite


def _in_set(name: str, column: str, values: Sequence[object], *detail: str) -> Check:
    exp = ExpectColumnValuesToBeInSet(column=column, value_set=list(values), meta={"gate": name})
    return Check(name, exp, (column, *detail))


def _true(name: str, column: str, *detail: str) -> Check:
    return _in_set(name, column, [True], *detail)


def _between(name: str, column: str, low: float | None, high: float | None, *detail: str) -> Check:
    exp = ExpectColumnValuesToBeBetween(
        column=column, min_value=low, max_value=high, meta={"gate": name}
    )
    return Check(name, exp, (column, *detail))


def ecg_suite(settings: GateSettings) -> SuiteSpec:
    """Silver ECG: canonical rate, known leads, finite, physiological amplitude and HR, R-peaks."""
    lo_hr, hi_hr = settings.hr_range_bpm
    lo_r, hi_r = settings.rpeak_ratio_range
    return SuiteSpec(
        "silver_ecg",
        tables.ECG,
        "record_key",
        (
            _in_set("ecg_canonical_sampling_rate", "fs", [settings.canonical_fs]),
            _true("ecg_known_lead_set", "leads_known", "leads"),
            _between("ecg_no_nan", "n_nonfinite", 0, 0),
            _between("ecg_amplitude_in_bounds", "peak_abs_mv", 0.0, settings.max_abs_mv),
            _between("ecg_heart_rate_in_range", "heart_rate_bpm", lo_hr, hi_hr),
            _between(
                "ecg_rpeaks_match_heart_rate", "rpeak_hr_ratio", lo_r, hi_r,
                "heart_rate_bpm", "duration_s",
            ),
        ),
    )  # fmt: skip


def echo_suite(settings: GateSettings) -> SuiteSpec:
    """Silver echo: increasing frame times, fps, keyframes inside the clip, LV area ratio."""
    lo_fps, hi_fps = settings.fps_range
    lo_lv, hi_lv = settings.lv_area_ratio_range
    frames_counted = ExpectColumnPairValuesToBeEqual(
        column_A="n_frame_times", column_B="n_frames", meta={"gate": "echo_frame_time_per_frame"}
    )
    return SuiteSpec(
        "silver_echo",
        tables.ECHO,
        "record_key",
        (
            _true("echo_frame_times_increasing", "frame_times_increasing"),
            Check("echo_frame_time_per_frame", frames_counted, ("n_frame_times", "n_frames")),
            _between("echo_fps_in_range", "fps", lo_fps, hi_fps),
            _true("echo_keyframes_in_clip", "keyframes_in_clip", "n_frames"),
            _between("echo_lv_area_ratio_plausible", "lv_area_ratio", lo_lv, hi_lv),
        ),
    )


def labs_suite(settings: GateSettings) -> SuiteSpec:
    """Silver labs: known LOINC codes, canonical units, values inside physiological limits."""
    del settings  # the limits are the catalogue's
    return SuiteSpec(
        "silver_labs",
        tables.LABS,
        "record_key",
        (
            _in_set("labs_known_loinc", "loinc", sorted(LAB_CATALOGUE)),
            _true("labs_canonical_unit", "unit_is_canonical", "loinc", "unit", "canonical_unit"),
            _true(
                "labs_value_within_limits", "value_in_limits",
                "loinc", "value", "unit", "limit_low", "limit_high",
            ),
        ),
    )  # fmt: skip


def labels_suite(settings: GateSettings) -> SuiteSpec:
    """Silver labels: adjudication of disagreements, batch kappa, label after exam, patient."""
    after_exam = ExpectColumnPairValuesAToBeGreaterThanB(
        column_A="label_time", column_B="exam_time", or_equal=True,
        meta={"gate": "labels_label_after_exam"},
    )  # fmt: skip
    return SuiteSpec(
        "silver_labels",
        tables.LABELS,
        "exam_key",
        (
            _true(
                "labels_adjudicated_where_readers_disagree", "disagreement_resolved",
                "reader_triage_urgent", "adjudicated",
            ),
            _between("labels_reader_kappa_above_floor", "batch_kappa", settings.kappa_floor, None,
                     "run_id", "batch_rated_exams"),
            Check("labels_label_after_exam", after_exam, ("exam_time", "label_time")),
            _true("labels_patient_present", "patient_known", "patient_key"),
        ),
    )  # fmt: skip


def alignment_suite(settings: GateSettings) -> SuiteSpec:
    """Gold alignment: lag bound, ECG/echo rate agreement, monotone beats, aligned share."""
    return SuiteSpec(
        "gold_alignment",
        tables.ALIGNMENT,
        "alignment_key",
        (
            _between("alignment_lag_within_bound", "abs_lag_ed_s", 0.0, settings.max_lag_s,
                     "beat", "sync_source"),
            _between("alignment_heart_rate_agreement", "hr_disagreement", 0.0,
                     settings.max_hr_disagreement, "ecg_hr_bpm", "echo_cycle_bpm"),
            _true("alignment_beat_times_monotone", "beat_times_monotone", "beat", "r_peak_s"),
            _between("alignment_aligned_share_above_floor", "pair_aligned_share",
                     settings.min_aligned_share, None),
        ),
    )  # fmt: skip


#: The suite builder of each gated table, in data-flow order.
SUITE_BUILDERS: dict[tables.Table, Callable[[GateSettings], SuiteSpec]] = {
    tables.ECG: ecg_suite,
    tables.ECHO: echo_suite,
    tables.LABS: labs_suite,
    tables.LABELS: labels_suite,
    tables.ALIGNMENT: alignment_suite,
}
