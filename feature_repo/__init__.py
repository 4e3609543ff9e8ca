"""The Feast feature repository: patient entity, pinned-snapshot sources, views and services.

Definitions are module-level objects (:mod:`~feature_repo.entities`,
:mod:`~feature_repo.sources`, :mod:`~feature_repo.feature_views`,
:mod:`~feature_repo.feature_services`); :mod:`~feature_repo.snapshot` builds the feature tables
from silver and exports Parquet snapshots of pinned Delta versions; :mod:`~feature_repo.store`
opens a ``FeatureStore`` over a lake (SQLite or Redis online store) and applies, materializes,
serves and builds point-in-time training sets.
"""
