"""`mslseg infer` with an exported model scores what `mslseg evaluate` scores, on frames of another size.

Both run the model at its training size (resized as training resized) and bring the labels back to
each frame's resolution; a default that ran frames at their own size, or resized them another way,
would drift apart here.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mslseg.cli.app import app
from mslseg.data import build_dataset
from mslseg.data.config import DataConfig
from mslseg.data.synthetic import write_cityscapes_layout, write_gta5_layout
from mslseg.runtime.metadata import Normalization
from mslseg.training.metrics import confusion_matrix, scores_from_confusion

runner = CliRunner()
pytestmark = pytest.mark.slow


def _invoke(args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def _score_label_pngs(city: Path, labels: Path) -> float:
    data = build_dataset(DataConfig(kind="cityscapes", root=str(city), split="val"), Normalization.official(),
                         train=False)
    conf = torch.zeros(19, 19, dtype=torch.int64)
    for i in range(len(data)):
        item = data[i]
        (png,) = labels.rglob(f"{Path(item['name']).stem}.png")
        pred = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert pred.shape == item["label"].shape  # labels come back at the frame's resolution
        conf += confusion_matrix(torch.from_numpy(pred.astype(np.int64))[None],
                                 torch.as_tensor(item["label"])[None], 19)
    return 100 * scores_from_confusion(conf, data.class_names).miou


def test_infer_scores_what_evaluate_scores(tmp_path):
    # frames at 128x64, the model trained at 64x32
    write_gta5_layout(tmp_path / "gta5", 16, "128x64", seed=0)
    city = tmp_path / "cityscapes"
    write_cityscapes_layout(city, 4, 6, "128x64", seed=1)
    run = tmp_path / "run"
    _invoke(["train", "-c", "synthetic", "--source", tmp_path / "gta5", "--set", "target_val=null",
             "--size", "64x32", "--iterations", "12", "--batch", "2", "--out", run])

    out = _invoke(["evaluate", run / "best.pt", "--data", city, "--out", tmp_path / "eval"])
    assert "model run at 64x32, scored at label resolution" in out
    evaluated = 100 * json.loads((tmp_path / "eval" / "scores.json").read_text())["miou"]

    model = tmp_path / "m.onnx"
    _invoke(["export", run / "best.pt", "-o", model, "--input", "uint8", "--output", "labels"])
    out = _invoke(["infer", f"{city}/leftImg8bit/val/*/*.png", "--model", model, "--out", tmp_path / "inf",
                   "--threads", "1"])
    assert "6 frames at 64x32 (the model's training size, bicubic)" in out
    inferred = _score_label_pngs(city, tmp_path / "inf" / "labels")
    assert abs(inferred - evaluated) <= 0.1, (inferred, evaluated)

    # at the frames' own size the same model gives other labels: the default above is not a no-op
    _invoke(["infer", f"{city}/leftImg8bit/val/*/*.png", "--model", model, "--out", tmp_path / "native",
             "--threads", "1", "--size", "native"])
    assert _score_label_pngs(city, tmp_path / "native" / "labels") != pytest.approx(inferred, abs=0.1)
