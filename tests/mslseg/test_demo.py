"""The demo's library entry point: `mslseg.demo.run_demo` with its plans (the CLI test runs it)."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from mslseg.demo import DemoPlan, DemoResult, run_demo, verdict
from mslseg.runtime.errors import InputError
from mslseg.runtime.sizes import Size


def test_plans():
    full, fast = DemoPlan.full(), DemoPlan.fast()
    assert fast.source_iterations < full.source_iterations and fast.adapt_iterations < full.adapt_iterations
    assert full.size == Size(128, 64)  # the synthetic config's size, where the README's method table was measured
    assert full.measures_adaptation and not fast.measures_adaptation


def _checkpoint(path, seed):
    import torch

    from mslseg.checkpoint import save_checkpoint
    from mslseg.classes import default_class_names, palette_for
    from mslseg.models import deeplabv2
    from mslseg.runtime.metadata import ModelMeta

    torch.manual_seed(seed)
    model = deeplabv2("resnet18", num_classes=19).eval()
    names = default_class_names(19)
    meta = ModelMeta(num_classes=19, class_names=names, palette=palette_for(names), train_size=Size(64, 32))
    return save_checkpoint(path, model, meta)


def test_before_after_picture_shows_the_frame_its_labels_both_models_and_a_legend(synth_data, tmp_path):
    import cv2
    import numpy as np

    from mslseg.data.config import DataConfig
    from mslseg.demo_pictures import before_after_picture

    val = DataConfig(kind="cityscapes", root=str(synth_data / "cityscapes"), split="val", size=(64, 32))
    path = before_after_picture(_checkpoint(tmp_path / "a.pt", 0), _checkpoint(tmp_path / "b.pt", 1), val,
                                tmp_path / "ba.png", index=1, note="chain check")
    picture = cv2.imread(str(path))
    frame = cv2.imread(str(sorted((synth_data / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))[1]))
    h, w = frame.shape[:2]
    header = 44  # two lines: the panel titles and the note
    assert picture.shape[1] == 4 * w and picture.shape[0] > header + h  # a legend strip below the panels
    panels = [picture[header:header + h, i * w:(i + 1) * w] for i in range(4)]
    assert np.array_equal(panels[0], frame)  # the target frame, untouched
    for i, panel in enumerate(panels):
        assert panel.std() > 5, f"panel {i} is blank"
    assert not np.array_equal(panels[1], panels[0])  # the ground truth is drawn over it
    assert not np.array_equal(panels[2], panels[3])  # two models, two predictions
    assert picture[:header].std() > 5 and picture[header + h:].std() > 5  # titles and legend are written


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


def test_short_runs_get_a_linear_loss_axis_and_long_ones_a_log_axis_with_several_ticks():
    import matplotlib.pyplot as plt

    from mslseg.training.plots import loss_scale

    def labelled_ticks(values):
        fig, ax = plt.subplots()
        ax.plot(range(len(values)), values)
        scale = loss_scale(ax, values)
        fig.canvas.draw()
        lo, hi = ax.get_ylim()
        ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
        plt.close(fig)
        return scale, len(ticks)

    fast = [2.5 - 0.1 * i for i in range(10)]  # a --fast run: 2.5 .. 1.6, under a decade
    scale, ticks = labelled_ticks(fast)
    assert scale == "linear" and ticks >= 3
    scale, ticks = labelled_ticks([3 * 0.97**i for i in range(200)])  # 3 .. 0.007: two decades and more
    assert scale == "log" and ticks >= 4
    assert labelled_ticks([0.5, 0.0, -0.1])[0] == "linear"  # nothing to take a log of
