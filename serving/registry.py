"""Gated promotion of device-model versions in the MLflow registry.

A new export is version N of ``cardiolake-student`` with alias ``challenger`` and its figures
as version tags (``cardiolake.export.*``, written by :mod:`serving.export`). Promotion checks
the gates of :class:`serving.settings.PromotionGates` against those figures and the current
champion's, records every gate's result on the challenger as ``cardiolake.gate.<name>`` tags
(with the mode and the decision), and only then moves ``champion``. Each champion remembers
its predecessor (``cardiolake.previous_champion``), so a rollback is one alias move back.
Runs in the platform environment: MLflow only, no PyTorch.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from cardiolake.tracking import CHALLENGER, CHAMPION, DEVICE_MODEL
from serving.artifacts import FIGURE_TAG
from serving.settings import GateMode, PromotionGates

GATE_TAG = "cardiolake.gate."
PREVIOUS_TAG = "cardiolake.previous_champion"
DECISION_TAG = "cardiolake.promotion"


class PromotionError(RuntimeError):
    """A promotion or rollback that cannot happen (no such version, no previous champion)."""


@dataclass(frozen=True)
class Gate:
    """One gate's outcome: name, passed (None: skipped), the values compared."""

    name: str
    passed: bool | None
    detail: str

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL`` or ``skipped``."""
        return "skipped" if self.passed is None else ("pass" if self.passed else "FAIL")


@dataclass(frozen=True)
class Decision:
    """What ``promote`` decided for one version."""

    version: str
    champion_before: str | None
    gates: tuple[Gate, ...]
    mode: GateMode
    promoted: bool

    @property
    def passed(self) -> bool:
        """Every checked gate passed."""
        return all(g.passed is not False for g in self.gates)


def _client() -> Any:
    import mlflow

    return mlflow.MlflowClient()


def alias_version(alias: str, name: str = DEVICE_MODEL) -> str | None:
    """The version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def resolve(ref: str, name: str = DEVICE_MODEL) -> str:
    """A version number from ``ref``: a number or an alias.

    Raises:
        PromotionError: unknown alias or version.
    """
    from mlflow.exceptions import MlflowException

    if ref.isdigit():
        try:
            _client().get_model_version(name, ref)
        except MlflowException as exc:
            raise PromotionError(f"{name} has no version {ref}") from exc
        return ref
    version = alias_version(ref, name)
    if version is None:
        raise PromotionError(f"{name} has no alias {ref!r}: run `cardiolake model export` first")
    return version


def figures(version: str, name: str = DEVICE_MODEL) -> dict[str, float | str]:
    """A version's export figures (validation AUC, parity, p95, size, shipped precision)."""
    tags = _client().get_model_version(name, version).tags
    out: dict[str, float | str] = {}
    for key, value in tags.items():
        if key.startswith(FIGURE_TAG):
            short = key.removeprefix(FIGURE_TAG)
            try:
                out[short] = float(value)
            except ValueError:
                out[short] = value
    return out


def check_gates(challenger: dict[str, Any], champion: dict[str, Any] | None,
                gates: PromotionGates) -> tuple[Gate, ...]:  # fmt: skip
    """Every gate of a challenger's figures against the champion's (pure: no registry)."""

    def num(d: dict[str, Any] | None, key: str) -> float:
        value = (d or {}).get(key, math.nan)
        return float(value) if isinstance(value, int | float) else math.nan

    auc_c, auc_0 = num(challenger, "validation_auc"), num(champion, "validation_auc")
    if champion is None:
        quality = Gate("validation_auc", math.isfinite(auc_c),
                       f"{auc_c:.4f}, no champion yet")  # fmt: skip
    else:
        floor = auc_0 - gates.auc_tolerance
        quality = Gate("validation_auc", math.isfinite(auc_c) and auc_c >= floor,
                       f"{auc_c:.4f} vs champion {auc_0:.4f} - {gates.auc_tolerance:g} "
                       f"= {floor:.4f}")  # fmt: skip
    parity = num(challenger, "parity_max_abs")
    p95 = num(challenger, "p95_ms")
    size = num(challenger, "size_kb")
    out = [
        quality,
        Gate("parity", parity <= gates.max_parity_abs,
             f"max |onnx - torch| {parity:.2e} <= {gates.max_parity_abs:g}"),
        Gate("latency_p95", p95 <= gates.max_p95_ms, f"{p95:.3f} ms <= {gates.max_p95_ms:g} ms"),
        Gate("size", size <= gates.max_size_kb, f"{size:.1f} KB <= {gates.max_size_kb:g} KB"),
    ]  # fmt: skip
    if challenger.get("shipped") == "int8":
        drop = num(challenger, "int8_auc_drop")
        out.append(
            Gate(
                "int8_auc",
                drop <= gates.max_int8_auc_drop,
                f"fp32 - int8 AUC {drop:+.4f} <= {gates.max_int8_auc_drop:g}",
            )
        )
    return tuple(out)


def promote(ref: str = CHALLENGER, gates: PromotionGates | None = None) -> Decision:
    """Check a version's gates, record them as version tags, and move ``champion`` if allowed.

    Modes: ``enforced`` moves the alias only when every gate passes; ``dry-run`` checks and
    records but never moves it; ``disabled`` moves it without checking (gates recorded as
    skipped). Promoting the current champion again is a no-op that still records the gates.

    Raises:
        PromotionError: unknown version or alias.
    """
    gates = gates or PromotionGates()
    mode = GateMode(gates.mode)
    client = _client()
    version = resolve(ref)
    current = alias_version(CHAMPION)
    champion_figures = figures(current) if current is not None and current != version else None
    if mode is GateMode.DISABLED:
        results = tuple(Gate(g.name, None, "gates disabled") for g in
                        check_gates(figures(version), champion_figures, gates))  # fmt: skip
    else:
        results = check_gates(figures(version), champion_figures, gates)
    decision = Decision(version, current, results, mode, promoted=False)
    move = mode is GateMode.DISABLED or (mode is GateMode.ENFORCED and decision.passed)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for gate in results:
        client.set_model_version_tag(DEVICE_MODEL, version, f"{GATE_TAG}{gate.name}",
                                     f"{gate.verdict}: {gate.detail}")  # fmt: skip
    outcome = "promoted" if move else "dry-run" if mode is GateMode.DRY_RUN else "refused"
    client.set_model_version_tag(DEVICE_MODEL, version, DECISION_TAG,
                                 f"{outcome} ({mode.value}) at {stamp}")  # fmt: skip
    if move and current != version:
        if current is not None:
            client.set_model_version_tag(DEVICE_MODEL, version, PREVIOUS_TAG, current)
        client.set_registered_model_alias(DEVICE_MODEL, CHAMPION, version)
        if alias_version(CHALLENGER) == version:
            client.delete_registered_model_alias(DEVICE_MODEL, CHALLENGER)
    return Decision(version, current, results, mode, promoted=move)


def rollback() -> tuple[str, str]:
    """Move ``champion`` back to the version it replaced; returns (from, to).

    Raises:
        PromotionError: no champion, or the champion replaced none.
    """
    client = _client()
    current = alias_version(CHAMPION)
    if current is None:
        raise PromotionError(f"{DEVICE_MODEL} has no champion to roll back")
    previous = client.get_model_version(DEVICE_MODEL, current).tags.get(PREVIOUS_TAG)
    if not previous:
        raise PromotionError(f"champion v{current} replaced no earlier version")
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    client.set_registered_model_alias(DEVICE_MODEL, CHAMPION, previous)
    client.set_model_version_tag(DEVICE_MODEL, current, DECISION_TAG,
                                 f"rolled back to v{previous} at {stamp}")  # fmt: skip
    return current, previous


def versions() -> list[dict[str, Any]]:
    """Every version of the device model: aliases, figures, gate results, decision."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        model = client.get_registered_model(DEVICE_MODEL)
    except MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    out = []
    for v in client.search_model_versions(f"name = '{DEVICE_MODEL}'"):
        tags = v.tags or {}
        out.append({
            "version": str(v.version),
            "aliases": sorted(aliases.get(str(v.version), [])),
            "created": dt.datetime.fromtimestamp(v.creation_timestamp / 1000, dt.UTC),
            "run_id": v.run_id,
            "student_run": tags.get("cardiolake.student_run", ""),
            "figures": figures(str(v.version)),
            "gates": {k.removeprefix(GATE_TAG): val for k, val in tags.items()
                      if k.startswith(GATE_TAG)},
            "decision": tags.get(DECISION_TAG, ""),
        })  # fmt: skip
    return sorted(out, key=lambda r: int(r["version"]))
