"""Score WFDB records with a registered PyTorch student (run in the training environment).

    python tests/serving/torch_score.py LAKE STUDENT_RUN PREPROCESSING_JSON RECORD...

Prints {record: urgent probability} as JSON: the reference the device script must match. The
recording goes through the device script's own reader and preprocessing (the spec is the
contract), then through PyTorch instead of onnxruntime.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from cardiolake.tracking import STUDENT_MODEL
from serving import device_script as dev
from training.evaluate import load_registered
from training.tracking import connect


def main() -> None:
    lake, run_id, spec_path, *records = sys.argv[1:]
    connect(Path(lake))
    student = load_registered(STUDENT_MODEL, run_id).model.student.eval()
    spec = json.loads(Path(spec_path).read_text())
    out = {}
    for record in records:
        windows, mask = dev.preprocess(dev.read_wfdb(Path(record)), spec)
        masks = np.repeat(mask[None], len(windows), axis=0)
        with torch.no_grad():
            logits = student(torch.from_numpy(windows), torch.from_numpy(masks))[0]
        mean = float(logits[:, 0].double().mean())
        out[record] = dev.decide(mean, int(mask.sum()), spec)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
