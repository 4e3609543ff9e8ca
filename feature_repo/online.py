"""The serving path of online features: one store round trip per request, no Feast machinery.

A triage service asks for one patient's features per request. Feast's
``get_online_features`` already sends its Redis reads as one pipeline, but around that one
round trip it re-resolves the feature service, rebuilds entity keys, hash fields and type
maps, and converts every value through several layers on *each* call (about 0.3 ms of
Python for the 31 features of ``teacher_training``, profiled in
``benchmarks/features.py``). The reader resolves all of that once, from the registry, and
per request sends one ``HMGET`` per patient (every view's fields and timestamps: Feast keeps
one Redis hash per entity) or one SQLite statement, then decodes the protobuf values.

The values are exactly Feast's (the same keys, fields and ``ValueProto`` bytes Feast's
materialization wrote); ``tests/feature_repo/test_features.py`` compares the two for every
patient on both stores.

Example:
    >>> reader = OnlineReader(open_store(settings), "teacher_training")
    >>> reader.read(["3f2a..."])["ntprobnp_pg_ml"]
    [412.0]
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

#: The entity's join key (feature_repo.entities.patient).
JOIN_KEY = "patient_key"


class OnlineReader:
    """Online features of one feature service, read in one round trip per request.

    Args:
        store: a store whose registry holds the service (after ``apply``) and whose online
            store was materialized.
        service: the feature service name.

    Raises:
        feast.errors.FeatureServiceNotFoundException: the service is not registered.
        ValueError: the online store is neither ``sqlite`` nor ``redis``.
    """

    def __init__(self, store: FeatureStore, service: str = "teacher_training") -> None:
        projections = store.get_feature_service(service).feature_view_projections
        #: (view, features) in the service's order (the order of Feast's response).
        self.views: list[tuple[str, list[str]]] = [
            (p.name, [f.name for f in p.features]) for p in projections
        ]
        self.features = [f for _, feats in self.views for f in feats]
        self._project = store.project
        self._key_version = store.config.entity_key_serialization_version
        kind = store.config.online_store.type
        if kind == "redis":
            self._read = self._redis_reader(store)
        elif kind == "sqlite":
            self._read = self._sqlite_reader(store)
        else:
            raise ValueError(f"online store must be sqlite or redis, got {kind!r}")

    def read(self, patient_keys: Sequence[str]) -> dict[str, list[Any]]:
        """Features of some patients, shaped like Feast's ``OnlineResponse.to_dict()``.

        Args:
            patient_keys: pseudonymous keys.

        Returns:
            ``patient_key`` and one list per feature (None where the store has no value).
        """
        rows = self._read([self._entity_key(k) for k in patient_keys])
        out: dict[str, list[Any]] = {JOIN_KEY: list(patient_keys)}
        for i, name in enumerate(self.features):
            out[name] = [row[i] for row in rows]
        return out

    def _entity_key(self, key: str) -> bytes:
        proto = EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=key)])
        return serialize_entity_key(proto, entity_key_serialization_version=self._key_version)

    def _redis_reader(self, store: FeatureStore) -> Callable[[list[bytes]], list[list[Any]]]:
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import RedisOnlineStore

        client = RedisOnlineStore()._get_client(store.config.online_store)
        fields: list[bytes | str] = [
            _mmh3(f"{view}:{name}") for view, feats in self.views for name in feats
        ]
        n = len(fields)
        fields += [f"_ts:{view}" for view, _ in self.views]
        suffix = self._project.encode()

        def read(keys: list[bytes]) -> list[list[Any]]:
            if len(keys) == 1:  # the service's case: one command, no pipeline object
                replies = [client.hmget(keys[0] + suffix, fields)]
            else:
                with client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hmget(key + suffix, fields)
                    replies = pipe.execute()
            return [[_decode(raw) for raw in reply[:n]] for reply in replies]

        return read

    def _sqlite_reader(self, store: FeatureStore) -> Callable[[list[bytes]], list[list[Any]]]:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        conn: sqlite3.Connection = SqliteOnlineStore()._get_conn(store.config)
        column = {(view, f): i for i, (view, f) in enumerate(_pairs(self.views))}
        # one statement over every view's table (Feast runs one per view)
        parts = [
            f"SELECT entity_key, '{view}', feature_name, value FROM \"{self._project}_{view}\" "
            "WHERE entity_key IN ({marks})"
            for view, _ in self.views
        ]

        def read(keys: list[bytes]) -> list[list[Any]]:
            marks = ",".join("?" * len(keys))
            sql = " UNION ALL ".join(part.format(marks=marks) for part in parts)
            rows: dict[bytes, list[Any]] = {k: [None] * len(column) for k in keys}
            for key, view, name, raw in conn.execute(sql, keys * len(parts)):
                i = column.get((view, name))
                if i is not None:
                    rows[key][i] = _decode(raw)
            return [rows[k] for k in keys]

        return read


def _pairs(views: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    return [(view, name) for view, feats in views for name in feats]


def _decode(raw: bytes | None) -> Any:
    """A serialized ``ValueProto`` as Feast returns it: scalar, list, or None."""
    if raw is None:
        return None
    value = Value()
    value.ParseFromString(raw)
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    got = getattr(value, kind)
    return list(got.val) if kind.endswith("_list_val") else got
