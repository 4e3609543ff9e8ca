"""Names shared by the export, the registry gates and the bundles (one place, no twins).

The export writes these files under its run's ``device/`` artifacts and these tags on the
registered version; promotion reads the figures, bundles copy the files and check the hashes.
"""

from __future__ import annotations

#: The exported models and the preprocessing spec.
FP32_FILE = "student.fp32.onnx"
INT8_FILE = "student.int8.onnx"
SPEC_FILE = "preprocessing.json"
REPORT_FILE = "export_report.json"
#: The drift reference (training inputs and held-out scores) monitoring compares against.
REFERENCE_FILE = "reference.json"
#: Run-artifact folder of an export.
DEVICE_DIR = "device"
#: Version-tag prefixes: export figures the gates read, and the model files' SHA-256.
FIGURE_TAG = "cardiolake.export."
HASH_TAG = "cardiolake.sha256."
