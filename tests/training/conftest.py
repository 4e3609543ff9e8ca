"""tests/training/env runs in the training environment only (``make test`` runs it there)."""

from __future__ import annotations

import importlib.util

# The platform environment has no torch or Petastorm: its pytest leaves env/ to the
# training environment's pytest instead of reporting every test there as skipped.
collect_ignore = [] if importlib.util.find_spec("petastorm") else ["env"]
