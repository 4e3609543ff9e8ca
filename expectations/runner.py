"""The checkpoint runner: validate each gated table, report, quarantine failures, build Data Docs.

Silver and gold tables are small enough to validate as pandas on the driver (read through
delta-rs); per-row derived columns come from :mod:`expectations.derived`. Each table runs
through a Great Expectations checkpoint in an ephemeral context whose only Data Docs site lives
under ``lake_root/_gx/data_docs``, so docs build offline next to the data they describe.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from cardiolake import lake, tables
from expectations import derived
from expectations.settings import GateSettings
from expectations.suites import SUITE_BUILDERS, SuiteSpec
from pipelines.quarantine import gate_stage

logger = logging.getLogger(__name__)

_ROW = "_gate_row"  # positional row id GE reports unexpected rows by
_DOCS_SITE = "lake"
_PATIENT_TABLES = (tables.ECG, tables.ECHO, tables.LABS, tables.NOTES)


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result on one table.

    Attributes:
        suite: the suite name.
        expectation: the gate name (the quarantine reason).
        kind: the Great Expectations expectation type.
        success: whether it passed.
        element_count: rows checked.
        unexpected_count: rows that failed it.
        unexpected_rows: positions (in the validated frame) of the failing rows.
    """

    suite: str
    expectation: str
    kind: str
    success: bool
    element_count: int
    unexpected_count: int
    unexpected_rows: tuple[int, ...] = ()


@dataclass
class SuiteOutcome:
    """One table's validation."""

    suite: str
    table: tables.Table
    rows: int
    expectations: list[ExpectationOutcome]

    @property
    def success(self) -> bool:
        """Every expectation passed: the batch may be promoted."""
        return all(e.success for e in self.expectations)

    def failed(self) -> list[str]:
        """Names of the failing expectations."""
        return [e.expectation for e in self.expectations if not e.success]


@dataclass
class GateReport:
    """What one gate run found.

    Attributes:
        suites: the validated tables, in data-flow order.
        skipped: gated tables that do not exist in the lake yet.
        quarantined: rows added to quarantine per reason.
        data_docs: the Data Docs index page, when built.
        run_id: this run's id (quarantine rows carry it).
    """

    suites: list[SuiteOutcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    quarantined: dict[str, int] = field(default_factory=dict)
    data_docs: Path | None = None
    run_id: str = ""

    @property
    def success(self) -> bool:
        """Every suite passed."""
        return all(s.success for s in self.suites)

    def suite(self, table: tables.Table | str) -> SuiteOutcome:
        """The outcome of one table (KeyError when it was not validated)."""
        t = tables.get_table(table)
        for s in self.suites:
            if s.table == t:
                return s
        raise KeyError(f"{t} was not validated")

    def blocked(self) -> list[tables.Table]:
        """Tables whose batch must not be promoted."""
        return [s.table for s in self.suites if not s.success]


class GateRunner:
    """A Great Expectations context holding every suite, ready to validate pandas frames.

    Args:
        settings: the configured bounds.
        docs_dir: where Data Docs are built (None: no docs site).
    """

    def __init__(self, *, settings: GateSettings, docs_dir: Path | None = None) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.settings = settings
        # GE's filesystem store needs an absolute base directory (lake roots may be relative)
        docs_dir = None if docs_dir is None else docs_dir.resolve()
        self.docs_dir = docs_dir
        self.context: Any = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        for site in list(self.context.get_site_names()):
            self.context.delete_data_docs_site(site)  # the default site is a temp dir
        if docs_dir is not None:
            docs_dir.mkdir(parents=True, exist_ok=True)
            self.context.add_data_docs_site(
                site_name=_DOCS_SITE,
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(docs_dir),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        self._source = self.context.data_sources.add_pandas("cardiolake")
        self._specs: dict[tables.Table, SuiteSpec] = {}
        self._checkpoints: dict[tables.Table, Any] = {}

    def spec(self, table: tables.Table | str) -> SuiteSpec:
        """The suite of a gated table."""
        return SUITE_BUILDERS[tables.get_table(table)](self.settings)

    def _checkpoint(self, table: tables.Table) -> Any:
        import great_expectations as gx
        from great_expectations.checkpoint.actions import UpdateDataDocsAction, ValidationAction

        if table not in self._checkpoints:
            spec = self.spec(table)
            self._specs[table] = spec
            suite = self.context.suites.add(spec.to_suite())
            asset = self._source.add_dataframe_asset(table.name)
            batch = asset.add_batch_definition_whole_dataframe(f"{table.name}_batch")
            vd = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{spec.name}_validation", data=batch, suite=suite)
            )
            actions: list[ValidationAction] = (
                [UpdateDataDocsAction(name="docs")] if self.docs_dir is not None else []
            )
            self._checkpoints[table] = self.context.checkpoints.add(
                gx.Checkpoint(
                    name=f"{spec.name}_checkpoint",
                    validation_definitions=[vd],
                    actions=actions,
                    result_format={
                        "result_format": "COMPLETE",
                        "unexpected_index_column_names": [_ROW],
                    },
                )
            )
        return self._checkpoints[table]

    def derive(
        self,
        table: tables.Table | str,
        frame: pd.DataFrame,
        *,
        known_patients: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """The frame with the derived columns its suite checks (and a positional row id)."""
        t = tables.get_table(table)
        if t == tables.ECG:
            out = derived.ecg_derived(frame)
        elif t == tables.ECHO:
            out = derived.echo_derived(frame)
        elif t == tables.LABS:
            out = derived.labs_derived(frame)
        elif t == tables.LABELS:
            out = derived.labels_derived(
                frame, known_patients, kappa_min_exams=self.settings.kappa_min_exams
            )
        elif t == tables.ALIGNMENT:
            out = derived.alignment_derived(frame)
        else:
            raise KeyError(f"no suite for {t}")
        out = out.reset_index(drop=True)
        out[_ROW] = range(len(out))
        return out

    def validate(
        self,
        table: tables.Table | str,
        frame: pd.DataFrame,
        *,
        known_patients: Iterable[str] | None = None,
    ) -> tuple[SuiteOutcome, pd.DataFrame]:
        """Validate one table's frame.

        Args:
            table: the gated table.
            frame: its rows (as read by :func:`cardiolake.lake.read_pandas`, or a modified copy).
            known_patients: patient keys known to silver (labels only).

        Returns:
            The outcome and the derived frame it was computed on (row ``i`` of the outcome's
            ``unexpected_rows`` is ``derived.iloc[i]``).
        """
        t = tables.get_table(table)
        data = self.derive(t, frame, known_patients=known_patients)
        checkpoint = self._checkpoint(t)
        spec = self._specs[t]
        result = checkpoint.run(batch_parameters={"dataframe": data})
        outcomes: list[ExpectationOutcome] = []
        for run in result.run_results.values():
            for res in run.results:
                config = res.expectation_config
                info = res.result or {}
                rows = tuple(int(r[_ROW]) for r in info.get("unexpected_index_list") or [])
                outcomes.append(
                    ExpectationOutcome(
                        suite=spec.name,
                        expectation=str((config.meta or {}).get("gate", config.type)),
                        kind=str(config.type),
                        success=bool(res.success),
                        element_count=int(info.get("element_count", len(data)) or 0),
                        unexpected_count=int(info.get("unexpected_count", 0) or 0),
                        unexpected_rows=rows,
                    )
                )
        order = {c.name: i for i, c in enumerate(spec.checks)}
        outcomes.sort(key=lambda o: order.get(o.expectation, len(order)))
        outcome = SuiteOutcome(spec.name, t, len(data), outcomes)
        logger.info(
            "gate %s: %d rows, %s",
            spec.name,
            len(data),
            "passed" if outcome.success else f"failed {outcome.failed()}",
        )
        return outcome, data

    def quarantine_frame(self, outcome: SuiteOutcome, data: pd.DataFrame) -> pd.DataFrame:
        """The failing rows of an outcome as quarantine input rows (one per row and reason).

        Columns: ``source_uri``, ``sha256``, ``row_id``, ``input_kind``, ``reason``, ``detail``
        (what :func:`pipelines.quarantine.quarantine_rows` shapes).
        """
        spec = self._specs.get(outcome.table) or self.spec(outcome.table)
        checks = {c.name: c for c in spec.checks}
        rows: list[dict[str, str | None]] = []
        for exp in outcome.expectations:
            if exp.success:
                continue
            check = checks.get(exp.expectation)
            cols = check.detail_columns if check else ()
            for pos in exp.unexpected_rows:
                row = data.iloc[pos]
                key = row.get(spec.key_column)
                observed = ", ".join(f"{c}={_show(row.get(c))}" for c in cols if c in data)
                rows.append(
                    {
                        "source_uri": str(row.get("source_uri") or f"table:{outcome.table}"),
                        "sha256": str(row["record_key"]) if "record_key" in data else None,
                        "row_id": None if key is None else str(key),
                        "input_kind": outcome.table.name,
                        "reason": exp.expectation,
                        "detail": f"{exp.kind}: {observed}",
                    }
                )
        columns = ["source_uri", "sha256", "row_id", "input_kind", "reason", "detail"]
        return pd.DataFrame(rows, columns=columns)

    def build_docs(self) -> Path | None:
        """Build the Data Docs site; return its index page (None without a docs dir)."""
        if self.docs_dir is None:
            return None
        self.context.build_data_docs(site_names=[_DOCS_SITE])
        index = self.docs_dir / "index.html"
        return index if index.exists() else None


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "tolist"):
        value = value.tolist()
    return str(value)


def gated_tables(layer: str | None = None) -> list[tables.Table]:
    """The gated tables of one layer (all gated tables when None)."""
    if layer is None:
        return list(SUITE_BUILDERS)
    return [t for t in tables.tables_in(layer) if t in SUITE_BUILDERS]


def known_patients(lake_root: Path) -> set[str]:
    """Patient keys with any silver ECG, echo, lab or note."""
    keys: set[str] = set()
    for t in _PATIENT_TABLES:
        if lake.table_exists(t, lake_root=lake_root):
            col = lake.read_pandas(t, lake_root=lake_root, columns=["patient_key"])["patient_key"]
            keys.update(str(k) for k in col.dropna())
    return keys


def run_gates(
    spark: SparkSession | None,
    lake_root: Path,
    *,
    layer: str | None = None,
    settings: GateSettings | None = None,
    frames: Mapping[tables.Table, pd.DataFrame] | None = None,
    quarantine: bool = True,
    data_docs: bool = True,
    now: datetime | None = None,
) -> GateReport:
    """Validate the gated tables of the lake, quarantine failing rows and build Data Docs.

    Args:
        spark: the session (writes quarantine rows; None validates without quarantining).
        lake_root: the lake root.
        layer: only this layer's tables (``silver`` or ``gold``); None gates all.
        settings: the bounds (default :class:`GateSettings`).
        frames: frames to validate instead of the lake's current version of a table
            (a candidate batch before promotion, or a test's hand-made violation).
        quarantine: write failing rows to ``quarantine`` (stage ``gate_<table>``).
        data_docs: build Data Docs under ``lake_root/_gx/data_docs``.
        now: the run's timestamp (default: now, UTC).

    Returns:
        The per-suite, per-expectation report; ``report.blocked()`` lists the tables whose
        batch must not be promoted.

    Raises:
        KeyError: when the layer is unknown.
    """
    settings = settings or GateSettings()
    lake_root = Path(lake_root)
    now = now or datetime.now(UTC)
    report = GateReport(run_id=uuid.uuid4().hex[:12])
    docs_dir = lake_root / "_gx" / "data_docs" if data_docs else None
    runner = GateRunner(settings=settings, docs_dir=docs_dir)
    frames = dict(frames or {})
    patients: set[str] | None = None
    bad: list[tuple[str, pd.DataFrame]] = []
    for table in gated_tables(layer):
        if table in frames:
            frame = frames[table]
        elif lake.table_exists(table, lake_root=lake_root):
            frame = lake.read_pandas(table, lake_root=lake_root)
        else:
            report.skipped.append(str(table))
            continue
        if table == tables.LABELS and patients is None:
            patients = known_patients(lake_root)
        outcome, data = runner.validate(table, frame, known_patients=patients)
        report.suites.append(outcome)
        if not outcome.success:
            bad.append((gate_stage(table), runner.quarantine_frame(outcome, data)))
    if quarantine and spark is not None:
        for stage, rows in bad:
            report.quarantined.update(
                _quarantine(spark, rows, stage, report.run_id, now, lake_root)
            )
    if data_docs:
        report.data_docs = runner.build_docs()
    return report


def _quarantine(
    spark: SparkSession,
    rows: pd.DataFrame,
    stage: str,
    run_id: str,
    now: datetime,
    lake_root: Path,
) -> dict[str, int]:
    from pipelines.quarantine import quarantine_rows, write_quarantine

    if rows.empty:
        return {}
    schema = ", ".join(f"{c} string" for c in rows.columns)
    df = spark.createDataFrame(rows.astype(object).where(rows.notna(), None), schema=schema)
    added = write_quarantine(quarantine_rows(df, stage=stage, run_id=run_id, now=now), lake_root)
    logger.info("gate %s: quarantined %s", stage, added)
    return added
