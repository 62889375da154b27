import torch
from typer.testing import CliRunner

from mslseg.checkpoint import load_model
from mslseg.cli.app import app
from mslseg.models import deeplabv2

runner = CliRunner()


def test_help_lists_convert_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "convert" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("mslseg ")


def test_convert_torchvision_resnet(tmp_path):
    model = deeplabv2("resnet18", num_classes=3)
    state = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    state["fc.weight"] = torch.zeros(1000, 512)
    src = tmp_path / "r18.pth"
    torch.save(state, src)
    dst = tmp_path / "out.pt"
    result = runner.invoke(app, ["convert", str(src), str(dst), "--from", "torchvision-resnet", "--num-classes", "7"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "runs at each frame's own size" in result.output
    loaded, meta = load_model(dst)
    assert meta.num_classes == 7 and len(meta.source_sha256) == 64 and meta.train_size is None
    result = runner.invoke(app, ["convert", str(src), str(tmp_path / "sized.pt"), "--from", "torchvision-resnet",
                                 "--size", "512x256"])
    assert result.exit_code == 0 and result.output.rstrip().endswith("runs at 512x256)"), result.output
    assert str(load_model(tmp_path / "sized.pt")[1].train_size) == "512x256"
    assert torch.equal(loaded.backbone.conv1.weight, model.backbone.conv1.weight)


def test_convert_bad_inputs_one_line_exit_1(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.pth"
    junk.write_text("hello")
    for src, needle in [(tmp_path / "missing.pth", "does not exist"), (empty, "empty"), (junk, "not a")]:
        result = runner.invoke(app, ["convert", str(src), str(tmp_path / "o.pt"), "--from", "msl"])
        assert result.exit_code == 1
        assert needle in result.output
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "o.pt").exists()


def test_convert_unknown_format_is_usage_error(tmp_path):
    result = runner.invoke(app, ["convert", "a", "b", "--from", "caffe"])
    assert result.exit_code == 2
