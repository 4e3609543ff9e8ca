"""Schemas across Spark, Arrow and Delta.

Spark's types map onto Arrow the way PySpark's own Arrow transfer does (``array<float>`` →
``list<float32>``, ``tinyint`` → ``int8``, ``binary`` → ``binary``, ``timestamp`` →
``timestamp[us, UTC]``). Every field is made nullable, as Delta Spark does for new tables, so
a DataFrame whose columns happen to be non-null today can still append tomorrow.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    ByteType,
    DataType,
    DateType,
    IntegerType,
    LongType,
    MapType,
    NullType,
    ShortType,
    StringType,
    StructType,
)

#: Spark types a partition column may have (their Delta partition values are unambiguous).
PARTITION_TYPES = (StringType, ByteType, ShortType, IntegerType, LongType, DateType, BooleanType)


def arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema of a Spark schema, with every field nullable.

    Args:
        schema: a DataFrame's Spark schema.

    Returns:
        The Arrow schema files are written with.
    """
    converted = to_arrow_schema(schema, timezone="UTC")
    return pa.schema([pa.field(f.name, _nullable(f.type), True) for f in converted])


def delta_schema(schema: pa.Schema) -> DeltaSchema:
    """The Delta schema of an Arrow schema."""
    return DeltaSchema.from_arrow(schema)


def spark_schema(table: DeltaTable) -> StructType:
    """The Spark schema of a Delta table (Delta's schema JSON is Spark's ``StructType`` JSON)."""
    return StructType.fromJson(json.loads(table.schema().to_json()))


def schema_difference(table: DeltaSchema, incoming: DeltaSchema) -> str | None:
    """Describe how two Delta schemas differ in column names or types, ignoring nullability.

    Args:
        table: the table's schema.
        incoming: the schema of the data to write.

    Returns:
        None when they agree, else a one-line description.
    """
    have = {f["name"]: f["type"] for f in _normalized(table)}
    got = {f["name"]: f["type"] for f in _normalized(incoming)}
    missing = sorted(set(have) - set(got))
    extra = sorted(set(got) - set(have))
    changed = sorted(n for n in set(have) & set(got) if have[n] != got[n])
    if not (missing or extra or changed):
        return None
    parts = []
    if missing:
        parts.append(f"missing columns {missing}")
    if extra:
        parts.append(f"new columns {extra}")
    if changed:
        parts.append(f"changed types {[(n, have[n], got[n]) for n in changed]}")
    return "; ".join(parts)


def check_columns(schema: StructType, partition_by: list[str]) -> None:
    """Raise ValueError for columns Delta cannot store or partition columns it cannot use.

    Args:
        schema: the DataFrame's schema.
        partition_by: the requested partition columns.

    Raises:
        ValueError: duplicate names, untyped (``NULL``) columns, or bad partition columns.
    """
    names = [f.name for f in schema.fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate column names {duplicates}")
    untyped = [f.name for f in schema.fields if _holds_null_type(f.dataType)]
    if untyped:
        raise ValueError(f"columns {untyped} have no type (NULL literals); cast them first")
    fields = {f.name: f.dataType for f in schema.fields}
    for name in partition_by:
        if name not in fields:
            raise ValueError(f"partition column {name!r} is not in the DataFrame")
        if not isinstance(fields[name], PARTITION_TYPES):
            raise ValueError(f"partition column {name!r} has unsupported type {fields[name]}")
    if len(partition_by) == len(fields):
        raise ValueError("at least one column must not be a partition column")


def _holds_null_type(data_type: DataType) -> bool:
    if isinstance(data_type, NullType):
        return True
    if isinstance(data_type, ArrayType):
        return _holds_null_type(data_type.elementType)
    if isinstance(data_type, MapType):
        return _holds_null_type(data_type.keyType) or _holds_null_type(data_type.valueType)
    if isinstance(data_type, StructType):
        return any(_holds_null_type(f.dataType) for f in data_type.fields)
    return False


def orderable(data_type: DataType) -> bool:
    """Whether Spark can sort by a column of this type (maps cannot, nor anything holding one)."""
    if isinstance(data_type, MapType):
        return False
    if isinstance(data_type, ArrayType):
        return orderable(data_type.elementType)
    if isinstance(data_type, StructType):
        return all(orderable(f.dataType) for f in data_type.fields)
    return True


def holds_arrays(schema: pa.Schema) -> bool:
    """Whether a schema has list or binary columns (signals), which want small row groups."""
    return any(_is_bulky(f.type) for f in schema)


def _is_bulky(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return True
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_struct(t):
        return any(_is_bulky(f.type) for f in t)
    return False


def _nullable(t: pa.DataType) -> pa.DataType:
    if pa.types.is_list(t):
        return pa.list_(pa.field(t.value_field.name, _nullable(t.value_type), True))
    if pa.types.is_large_list(t):
        return pa.large_list(pa.field(t.value_field.name, _nullable(t.value_type), True))
    if pa.types.is_map(t):
        item = pa.field(t.item_field.name, _nullable(t.item_type), True)
        return pa.map_(t.key_field, item)
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _nullable(f.type), True) for f in t])
    return t


def _normalized(schema: DeltaSchema) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = json.loads(schema.to_json())["fields"]
    return [{"name": f["name"], "type": _strip(f["type"])} for f in fields]


def _strip(t: Any) -> Any:
    """A Delta type JSON without nullability flags and field metadata."""
    if isinstance(t, dict):
        return {
            k: _strip(v)
            for k, v in t.items()
            if k not in ("nullable", "containsNull", "valueContainsNull", "metadata")
        }
    if isinstance(t, list):
        return [_strip(v) for v in t]
    return t
