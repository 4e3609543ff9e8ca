"""Every ``cardiolake`` command answers a user's common mistakes with one line and exit 2.

The walk runs :func:`cardiolake.cli.main` in-process (the console script's entry point) on
mistakes that fail before any Spark session starts: missing folders, a lake never ingested,
features never applied, unknown option values. Unexpected failures print one line and exit 1;
``-vv`` shows the traceback.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from cardiolake.cli import main
from cardiolake.cli.errors import UserError, user_message

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "wfdb" / "mitdb" / "100"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A missing path, an empty folder, a landing with one file, a lake of one bronze table."""
    root = tmp_path_factory.mktemp("mistakes")
    empty = root / "empty"
    empty.mkdir()
    landing = root / "landing"
    landing.mkdir()
    (landing / "labs.csv").write_text("a,b\n1,2\n")
    lake = root / "lake"
    write_deltalake(str(lake / "bronze" / "labs_raw"), pa.table({"x": [1]}))
    return {"missing": root / "nope", "empty": empty, "landing": landing, "lake": lake}


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0), capsys.readouterr().err


#: (command line, a word the one-line message must contain); {name} is a path of `places`.
MISTAKES = [
    ("ingest --landing {missing}", "no such folder"),
    ("ingest --landing {empty}", "empty"),
    ("ingest --landing {landing} --stage platinum", "platinum"),
    ("ingest --landing {landing} --config {missing}", "no such file"),
    ("ingest --landin {landing}", "--landing"),
    ("validate --lake {missing}", "cardiolake ingest"),
    ("validate --lake {lake} --layer bronze", "silver or gold"),
    ("lake tables --lake {missing}", "cardiolake ingest"),
    ("lake tables --lake {empty}", "no Delta tables"),
    ("lake history silver.nothing --lake {lake}", "bronze.labs_raw"),
    ("lake optimize --lake {missing}", "cardiolake ingest"),
    ("lake optimize --lake {lake} --vacuum --retention-hours 1", "--allow-short-retention"),
    ("features apply --lake {missing}", "cardiolake ingest"),
    ("features apply --lake {lake}", "silver.labs"),
    ("features apply --lake {lake} --online mongodb", "sqlite or redis"),
    ("features apply --lake {lake} --no-build --encoder labs=x/1", "ecg_embedding"),
    ("features materialize --lake {lake}", "cardiolake features apply"),
    ("features get --patient abc --lake {lake}", "cardiolake features apply"),
    ("features get --lake {lake}", "--patient"),
    ("features training-set --lake {lake} --entities echo", "labels or ecg"),
    ("features training-set --lake {lake}", "gold.examples_labeled"),
    ("cohort generate --out {empty} --patients 0", "patients"),
    ("cohort generate --out {landing}/labs.csv", "not a folder"),
    ("cohort describe {missing}", "no such folder"),
    ("cohort describe {empty}", "cohort generate"),
    ("cohort plot {missing} --patient 1 --out {empty}/p.png", "no such folder"),
    ("ecg rpeaks {missing}", "no ECG record"),
    ("mlflow ui --lake {missing} --print", "no MLflow store"),
    ("train pretrain --lake {missing}", "cardiolake ingest"),
    ("train teacher --lake {lake}", "cardiolake features apply"),
    ("train student --lake {lake}", "cardiolake train teacher"),
    ("train align --lake {lake} --config {missing}", "no such file"),
    ("train teacher --lake {lake} --python {missing}", "make train-env"),
    ("evaluate --lake {lake} --out {empty}", "cardiolake features apply"),
    ("model export --lake {lake}", "cardiolake train student"),
    ("model list --lake {lake}", "cardiolake model export"),
    ("model promote --lake {missing}", "no MLflow store"),
    ("model rollback --lake {lake}", "cardiolake model export"),
    ("model bundle --lake {lake} --out {empty}", "cardiolake model export"),
    ("model verify-bundle {missing}", "no such folder"),
    ("score --lake {lake}", "--landing"),
    ("score --lake {lake} --landing {missing}", "no such folder"),
    ("score --lake {lake} --landing {landing}", "cardiolake model export"),
    ("monitor --lake {lake}", "cardiolake score"),
    ("lineage latest --lake {lake}", "cardiolake model export"),
    ("demo --out {empty} --patients 3", "at least"),
    ("demo --out {landing}/labs.csv", "not a folder"),
    ("demo summary --out {missing}", "cardiolake demo"),
    ("no-such-command", "no-such-command"),
]


@pytest.mark.parametrize(("line", "expected"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], places: dict[str, Path], line: str, expected: str
) -> None:
    args = [part.format(**places) for part in line.split()]
    code, err = _run(capsys, args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.skipif(not SHARED.with_suffix(".hea").is_file(), reason="no shared MIT-BIH record")
def test_ecg_lead_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, ["ecg", "rpeaks", str(SHARED), "--lead", "9"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "2-lead" in err


def test_third_party_not_found_errors_name_the_fix() -> None:
    import redis
    from feast.errors import FeatureServiceNotFoundException

    from cardiolake.lake import TableNotFoundError

    feast_err = FeatureServiceNotFoundException("teacher_training", "cardiolake")
    assert "cardiolake features apply" in (user_message(feast_err) or "")
    assert "cardiolake ingest" in (user_message(TableNotFoundError("silver.ecg")) or "")
    assert "--redis-url" in (user_message(redis.exceptions.ConnectionError("Error 111")) or "")
    assert user_message(UserError("no lake at x", "ingest")) == "no lake at x: ingest"
    assert user_message(RuntimeError("boom")) is None


def test_unexpected_failure_is_one_line_exit_1_and_traceback_at_vv(
    capsys: pytest.CaptureFixture[str], places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cardiolake.cli.lake as lake_cli

    def broken(root: Path) -> list[object]:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(lake_cli, "require_lake", broken)
    code, err = _run(capsys, ["lake", "tables", "--lake", str(places["lake"])])
    assert code == 1 and err.strip().splitlines() == [
        "error: RuntimeError: disk on fire (unexpected; rerun with -vv for the traceback)"
    ]
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["-vv", "lake", "tables", "--lake", str(places["lake"])])


def test_the_app_itself_answers_a_mistake(places: dict[str, Path]) -> None:
    """CliRunner invokes ``app`` without main(): the root group answers the mistake."""
    from typer.testing import CliRunner

    from cardiolake.cli import app

    result = CliRunner().invoke(
        app, ["features", "get", "--patient", "k", "--lake", str(places["lake"])]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: no features registered under {places['lake']}/_feast: run "
        "`cardiolake features apply --lake <lake>` first"
    ]
