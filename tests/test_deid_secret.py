"""The pseudonym secret: no public default, a private per-lake development secret, refusals."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cardiolake.pseudonym import (
    DEVELOPMENT_SECRET,
    MIN_SECRET_BYTES,
    SecretError,
    development_secret,
    development_secret_path,
    patient_key,
    resolve_secret,
)
from pipelines.job import run_ingest
from pipelines.settings import IngestSettings


def test_development_secret_is_random_private_and_beside_the_lake(tmp_path: Path) -> None:
    lake_a, lake_b = tmp_path / "a" / "lake", tmp_path / "b" / "lake"
    secret = development_secret(lake_a)
    path = development_secret_path(lake_a)
    assert path.parent == lake_a.parent and not path.is_relative_to(lake_a)  # never in a table
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) == 64 and development_secret(lake_a) == secret  # stable per lake
    assert development_secret(lake_b) != secret  # random per lake, nothing public
    assert resolve_secret(DEVELOPMENT_SECRET, lake_a) == secret
    assert resolve_secret(None, lake_a) == secret


def test_unsafe_secrets_are_refused(tmp_path: Path) -> None:
    for bad in ("", "x", "s" * (MIN_SECRET_BYTES - 1)):
        with pytest.raises(SecretError, match="shorter than 16 bytes"):
            resolve_secret(bad, tmp_path / "lake")
        with pytest.raises(SecretError):
            patient_key("12345678", bad)
    with pytest.raises(SecretError):
        patient_key("12345678", DEVELOPMENT_SECRET)  # the marker is no key
    development_secret(tmp_path / "lake")
    development_secret_path(tmp_path / "lake").chmod(0o644)
    with pytest.raises(SecretError, match="readable or writable by others"):
        development_secret(tmp_path / "lake")


@pytest.mark.parametrize("secret", ["", "short"])
def test_ingest_refuses_a_short_secret_before_reading_any_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    def must_not_run(*_: object, **__: object) -> None:
        raise AssertionError("the landing zone was read before the secret was checked")

    monkeypatch.setattr("pipelines.job.scan_landing", must_not_run)
    with pytest.raises(SecretError):  # refused when the settings are built (the CLI edge)
        IngestSettings(
            landing=tmp_path / "landing", lake_root=tmp_path / "lake", pseudonym_secret=secret
        )
    settings = IngestSettings(landing=tmp_path / "landing", lake_root=tmp_path / "lake")
    object.__setattr__(settings, "pseudonym_secret", secret)  # and again when a run starts
    with pytest.raises(SecretError):
        run_ingest(None, settings)  # type: ignore[arg-type]  # fails before Spark is used
    assert not (tmp_path / "lake").exists()


def test_the_cli_refuses_a_short_secret_with_a_clear_message(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "x.csv").write_text("a,b\n1,2\n")
    cli = Path(sys.executable).parent / "cardiolake"
    env = {**os.environ, "CARDIOLAKE_PSEUDONYM_SECRET": "short"}
    proc = subprocess.run(  # noqa: S603 - our own CLI
        [str(cli), "ingest", "--landing", str(tmp_path / "landing"), "--lake",
         str(tmp_path / "lake")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "shorter than 16 bytes" in proc.stdout + proc.stderr
    assert not (tmp_path / "lake").exists()
