"""A user's own network (python:MODULE:FUNCTION) through the CLI: train, adapt, evaluate, export,
infer and bench, and the --factory rule on every command that loads its checkpoint."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mslseg.checkpoint import save_checkpoint
from mslseg.classes import default_class_names, palette_for
from mslseg.cli.app import app
from mslseg.models.factory import FactoryModel
from mslseg.runtime.metadata import ModelMeta, Normalization
from mslseg.runtime.sizes import Size

runner = CliRunner()
NETS = Path(__file__).resolve().parents[1] / "mslseg" / "byo_nets.py"
NET = f"python:{NETS}:build_net"  # the .py-file form; tests/mslseg uses the module form
OTHER = f"python:{NETS}:build_other"


def _one_line_error(r, *needles):
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for needle in needles:
        assert needle in r.output, r.output


@pytest.fixture(scope="module")
def byo_ckpt(tmp_path_factory):
    """An untrained checkpoint of the test network, for the 19 Cityscapes classes of synth_data."""
    names = default_class_names(19)
    meta = ModelMeta(num_classes=19, class_names=names, palette=palette_for(names),
                     normalization=Normalization.imagenet(), train_size=Size(64, 32))
    return save_checkpoint(tmp_path_factory.mktemp("byo") / "byo.pt", FactoryModel(NET, 19).eval(), meta)


def _commands(ckpt: Path, synth_data: Path, tmp_path: Path) -> dict[str, list[str]]:
    city = synth_data / "cityscapes"
    image = str(next((city / "leftImg8bit" / "val").rglob("*.png")))
    return {
        "evaluate": ["evaluate", str(ckpt), "--data", str(city), "--out", str(tmp_path / "eval")],
        "export": ["export", str(ckpt), "-o", str(tmp_path / "m.onnx")],
        "infer": ["infer", image, "-m", str(ckpt), "-o", str(tmp_path / "infer")],
        "bench": ["bench", str(ckpt), "--size", "64x32", "--repeats", "1", "--warmup", "0",
                  "--pipeline-frames", "0", "--no-torch-fast", "-o", str(tmp_path / "bench.json")],
    }


def test_factory_checkpoint_is_refused_without_the_same_factory(byo_ckpt, synth_data, tmp_path):
    for name, args in _commands(byo_ckpt, synth_data, tmp_path).items():
        _one_line_error(runner.invoke(app, args), f"built by {NET}", f"pass --factory {NET}")
        _one_line_error(runner.invoke(app, [*args, "--factory", OTHER]), f"you named {OTHER}", f"--factory {NET}")
        assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "bench.json").exists(), name


def test_factory_option_on_an_exported_model_is_refused(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read")
    r = runner.invoke(app, ["infer", str(model), "-m", str(model), "-o", str(tmp_path / "o"), "--factory", NET])
    _one_line_error(r, "drop --factory")
    r = runner.invoke(app, ["export", str(model), "--trt", "--factory", NET])
    _one_line_error(r, "--factory")


@pytest.mark.slow
def test_factory_checkpoint_benches_with_its_factory(byo_ckpt, synth_data, tmp_path):
    r = runner.invoke(app, [*_commands(byo_ckpt, synth_data, tmp_path)["bench"], "--factory", NET])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "bench.json").is_file()


def test_train_adapt_evaluate_export_infer_a_factory_network(synth_data, tmp_path):
    city = synth_data / "cityscapes"
    common = ["-c", "synthetic", "--model", NET, "--size", "64x32", "--batch", "2", "--source",
              str(synth_data / "gta5"), "--target-val", str(city), "--set", "train.checkpoint_every=3"]
    r = runner.invoke(app, ["train", *common, "--iterations", "3", "--out", str(tmp_path / "src")])
    assert r.exit_code == 0, r.output
    assert f"{NET} (main+aux heads)" in r.output
    ckpt = tmp_path / "src" / "best.pt"

    r = runner.invoke(app, ["adapt", *common, "--init", str(ckpt), "--target", str(city), "--iterations", "2",
                            "--out", str(tmp_path / "adapt")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["adapt", "-c", "synthetic", "--init", str(ckpt), "--source", str(synth_data / "gta5"),
                            "--target", str(city), "--iterations", "2", "--out", str(tmp_path / "refused")])
    _one_line_error(r, f"--model {NET}")

    commands = _commands(tmp_path / "adapt" / "best.pt", synth_data, tmp_path)
    _one_line_error(runner.invoke(app, commands["evaluate"]), f"pass --factory {NET}")
    r = runner.invoke(app, [*commands["evaluate"], "--factory", NET])
    assert r.exit_code == 0, r.output
    assert "mIoU" in r.output and (tmp_path / "eval" / "scores.json").is_file()
    r = runner.invoke(app, [*commands["export"], "--factory", NET])
    assert r.exit_code == 0, r.output
    assert "labels agree" in r.output
    # the exported model runs without the user's code
    r = runner.invoke(app, [*commands["infer"][:3], str(tmp_path / "m.onnx"), "-o", str(tmp_path / "onnx-out")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*commands["infer"], "--factory", NET])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "infer").rglob("*.png"))) >= 1


@pytest.mark.slow
def test_a_network_trained_in_one_folder_loads_from_another(synth_data, tmp_path, monkeypatch):
    """The checkpoint records the code's absolute path: the --factory it suggests works from anywhere."""
    a, b = tmp_path.resolve() / "a", tmp_path.resolve() / "b"
    a.mkdir()
    b.mkdir()
    (a / "mynets.py").write_text(NETS.read_text())
    monkeypatch.chdir(a)
    r = runner.invoke(app, ["train", "-c", "synthetic", "--model", "python:mynets.py:build_net", "--size", "64x32",
                            "--batch", "2", "--iterations", "1", "--source", str(synth_data / "gta5"),
                            "--set", "target_val=null", "--set", "train.workers=0", "--out", "run"])
    assert r.exit_code == 0, r.output
    monkeypatch.chdir(b)
    evaluate = ["evaluate", "../a/run/best.pt", "--data", str(synth_data / "cityscapes"), "--out", "eval"]
    suggested = f"python:{a / 'mynets.py'}:build_net"
    _one_line_error(runner.invoke(app, evaluate), f"pass --factory {suggested}")
    _one_line_error(runner.invoke(app, [*evaluate, "--factory", "python:mynets.py:build_net"]),
                    f"(recorded file {a / 'mynets.py'}, given {b / 'mynets.py'})")
    for factory in (suggested, "python:../a/mynets.py:build_net"):
        r = runner.invoke(app, [*evaluate, "--factory", factory, "--overwrite"])
        assert r.exit_code == 0, r.output
        assert (b / "eval" / "scores.json").is_file()
