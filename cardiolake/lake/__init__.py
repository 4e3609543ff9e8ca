"""Delta I/O for the lake's named tables: a handful of writers and readers.

Tables live at ``lake_root/layer/name`` (see :mod:`cardiolake.tables`). Where Spark has the
Delta jars (Databricks), reads and writes are plain ``format("delta")``. Where it has not (every
machine here), Spark tasks write Parquet files into the table folder and the driver commits
exactly those files to the Delta log in one delta-rs transaction, through a Spark Python data
source. Both paths produce standard Delta tables; ``deltalake.DeltaTable`` opens either.

Example:
    >>> from cardiolake import lake, tables
    >>> v = lake.merge_table(batch, tables.ECG_RAW, lake_root="lake", keys=["sha256"])
    >>> df = lake.read_table(spark, tables.ECG_RAW, lake_root="lake", version=v)
    >>> lake.optimize_table(tables.ECG_RAW, lake_root="lake").files_after
    1
"""

from cardiolake.lake._catalog import (
    HistoryEntry,
    list_tables,
    log_versions,
    table_exists,
    table_files,
    table_history,
    table_version,
)
from cardiolake.lake._errors import (
    CommitConflictError,
    LakeError,
    SchemaMismatchError,
    TableExistsError,
    TableNotFoundError,
)
from cardiolake.lake._io import (
    SCALAR_ROW_GROUP_ROWS,
    SIGNAL_ROW_GROUP_ROWS,
    MatchedAction,
    WriteMode,
    merge_table,
    read_arrow,
    read_pandas,
    read_table,
    write_table,
)
from cardiolake.lake._paths import table_uri
from cardiolake.lake._retry import CommitRetry
from cardiolake.lake._upkeep import (
    OptimizeResult,
    OptimizeSettings,
    RetentionTooShortError,
    VacuumResult,
    VacuumSettings,
    optimize_table,
    retention_minimum_hours,
    vacuum_table,
)

__all__ = [
    "SCALAR_ROW_GROUP_ROWS",
    "SIGNAL_ROW_GROUP_ROWS",
    "CommitConflictError",
    "CommitRetry",
    "HistoryEntry",
    "LakeError",
    "MatchedAction",
    "OptimizeResult",
    "OptimizeSettings",
    "RetentionTooShortError",
    "SchemaMismatchError",
    "TableExistsError",
    "TableNotFoundError",
    "VacuumResult",
    "VacuumSettings",
    "WriteMode",
    "list_tables",
    "log_versions",
    "merge_table",
    "optimize_table",
    "read_arrow",
    "read_pandas",
    "read_table",
    "retention_minimum_hours",
    "table_exists",
    "table_files",
    "table_history",
    "table_uri",
    "table_version",
    "vacuum_table",
    "write_table",
]
