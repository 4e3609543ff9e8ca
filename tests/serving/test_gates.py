"""Promotion gates as pure functions of the export figures."""

from __future__ import annotations

from serving.registry import check_gates
from serving.settings import PromotionGates

GOOD = {"validation_auc": 0.85, "parity_max_abs": 2e-7, "p95_ms": 0.3, "size_kb": 200.0,
        "int8_auc_drop": 0.001, "shipped": "int8"}  # fmt: skip


def _verdicts(challenger: dict, champion: dict | None, **gates) -> dict[str, bool | None]:
    return {g.name: g.passed for g in check_gates(challenger, champion, PromotionGates(**gates))}


def test_a_first_model_passes_on_its_own_figures() -> None:
    assert all(_verdicts(GOOD, None).values())


def test_a_worse_challenger_fails_quality_but_a_tolerated_one_passes() -> None:
    champion = {**GOOD, "validation_auc": 0.86}
    assert _verdicts({**GOOD, "validation_auc": 0.80}, champion)["validation_auc"] is False
    assert _verdicts({**GOOD, "validation_auc": 0.857}, champion)["validation_auc"] is True
    assert _verdicts({**GOOD, "validation_auc": 0.80}, champion, auc_tolerance=0.1)[
        "validation_auc"] is True  # fmt: skip


def test_parity_latency_size_and_int8_gates_each_fail_on_their_own() -> None:
    assert _verdicts({**GOOD, "parity_max_abs": 1e-3}, None)["parity"] is False
    assert _verdicts({**GOOD, "p95_ms": 1.5}, None)["latency_p95"] is False
    assert _verdicts({**GOOD, "size_kb": 301.0}, None)["size"] is False
    assert _verdicts({**GOOD, "int8_auc_drop": 0.02}, None)["int8_auc"] is False
    # an fp32 model ships without the int8 gate; missing figures never pass
    assert "int8_auc" not in _verdicts({**GOOD, "shipped": "fp32"}, None)
    assert _verdicts({"shipped": "fp32"}, None) == {
        "validation_auc": False, "parity": False, "latency_p95": False, "size": False}  # fmt: skip
