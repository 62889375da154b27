"""A run's last evaluation and `mslseg evaluate` of its checkpoint: same number under the same protocol.

Why the first hour's 16.98 (training) and 16.87 (`mslseg evaluate`) differed: training scores
target_val at the run size (labels resized nearest with the images, `resize_labels: true`, the
MaxSquareLoss reference), `mslseg evaluate` by default at the labels' own resolution (the
prediction resized to them, ADVENT). Both lines now say which; with `--resize-labels` evaluate
follows the training protocol and the numbers are equal. The run size (32x16) is below the labels'
(64x32) so that the two protocols really differ here.
"""

import json
import re

import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app

runner = CliRunner()
LINE = re.compile(r"target mIoU ([\d.]+) \(best [\d.]+; (model run at \S+, scored at [^)]+)\)")


@pytest.mark.slow
def test_last_eval_equals_evaluate_of_the_checkpoint(synth_data, tmp_path):
    city, run = synth_data / "cityscapes", tmp_path / "run"
    r = runner.invoke(app, ["train", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--target-val", str(city),
                            "--iterations", "2", "--size", "32x16", "--batch", "2", "--device", "cpu",
                            "--out", str(run), "--set", "train.workers=0"])
    assert r.exit_code == 0, r.output
    found = LINE.search(r.output)
    assert found, r.output
    train_miou, train_protocol = float(found.group(1)), found.group(2)
    assert train_protocol == "model run at 32x16, scored at 32x16"
    last_eval = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]
    assert last_eval["eval"]["protocol"] == train_protocol

    def evaluate(*extra: str) -> tuple[float, str]:
        out = tmp_path / f"eval{len(extra)}"
        r = runner.invoke(app, ["evaluate", str(run / "last.pt"), "--data", str(city), "--device", "cpu",
                                "--out", str(out), *extra])
        assert r.exit_code == 0, r.output
        scores = json.loads((out / "scores.json").read_text())
        assert f"({scores['protocol']})" in r.output  # the line says how it scored
        return scores["miou"], scores["protocol"]

    same_miou, same_protocol = evaluate("--resize-labels")
    assert same_protocol == train_protocol
    assert 100 * same_miou == pytest.approx(train_miou, abs=0.005)  # the line shows 2 decimals
    assert same_miou == pytest.approx(last_eval["eval"]["miou"], abs=1e-12)

    _, default_protocol = evaluate()
    assert default_protocol == "model run at 32x16, scored at label resolution"
