"""The demo's library entry point: `mslseg.demo.run_demo` with its plans (the CLI test runs it)."""

import inspect
import subprocess
import sys
from types import SimpleNamespace

import pytest

from mslseg.demo import DemoPlan, DemoResult, run_demo, verdict
from mslseg.runtime.errors import InputError
from mslseg.runtime.sizes import Size


def test_entry_point_and_plans():
    params = inspect.signature(run_demo).parameters
    assert list(params)[:2] == ["out", "plan"]
    assert params["overwrite"].kind is inspect.Parameter.KEYWORD_ONLY and params["overwrite"].default is False
    full, fast = DemoPlan.full(), DemoPlan.fast()
    assert fast.source_iterations < full.source_iterations and fast.adapt_iterations < full.adapt_iterations
    assert full.size == Size(128, 64)  # the synthetic config's size, where the README's method table was measured
    assert full.measures_adaptation and not fast.measures_adaptation
    assert {"before", "after", "files", "seconds"} <= set(DemoResult.__dataclass_fields__)


def test_importing_the_demo_module_stays_light():
    code = "import sys, mslseg.demo; assert 'torch' not in sys.modules, 'mslseg.demo imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_non_empty_out_is_refused_without_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="--overwrite"):
        run_demo(tmp_path, DemoPlan.fast())
    assert (tmp_path / "keep.txt").read_text() == "mine"


def _result(before: float, after: float) -> DemoResult:
    return DemoResult(SimpleNamespace(miou=before), SimpleNamespace(miou=after))


def test_the_verdict_claims_no_more_than_the_scores_say():
    full, fast = DemoPlan.full(), DemoPlan.fast()
    text = verdict(_result(0.1318, 0.1260), fast)
    assert "does not measure adaptation" in text and "gain" not in text and "13" not in text
    assert "did not gain" in verdict(_result(0.1318, 0.1260), full)
    assert "gained 9.8 mIoU points" in verdict(_result(0.145, 0.243), full)


def test_the_cli_help_states_the_plans_durations():
    from typer.testing import CliRunner

    from mslseg.cli.app import app

    out = CliRunner().invoke(app, ["demo", "--help"], terminal_width=200).output
    assert DemoPlan.full().takes in " ".join(out.split()) and DemoPlan.fast().takes in " ".join(out.split())


def test_curves_show_single_points_and_say_when_a_panel_is_empty(tmp_path):
    import json

    from mslseg.demo_pictures import curves_picture
    from mslseg.training.plots import draw_series, finish_panel

    names = ("road", "car")
    none = SimpleNamespace(iou=[float("nan")] * 2, miou=float("nan"), class_names=names)
    assert curves_picture(tmp_path / "absent", tmp_path / "absent", none, none, tmp_path / "empty.png").is_file()
    one = tmp_path / "m.jsonl"
    one.write_text(json.dumps({"iteration": 5, "loss_source": 2.5, "loss_target": -0.05}) + "\n")
    scores = SimpleNamespace(iou=[0.5, float("nan")], miou=0.5, class_names=names)
    assert curves_picture(one, one, scores, scores, tmp_path / "one.png", note="chain check").is_file()

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert draw_series(ax, [5], [2.5], label="one point") and ax.lines[0].get_marker() == "o"
    assert not draw_series(ax, [1, 2], [None, float("nan")])
    finish_panel(ax, True)
    _, empty = plt.subplots()
    finish_panel(empty, False)
    assert [t.get_text() for t in empty.texts] == ["no data"]
    plt.close("all")
