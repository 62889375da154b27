
import logging
import re
from pathlib import Path

import pytest
import torch

from mslseg.checkpoint import load_checkpoint, load_model, model_from_checkpoint, save_checkpoint
from mslseg.classes import default_class_names, palette_for
from mslseg.foreign import import_foreign, map_msl_keys, strip_wrappers
from mslseg.models import deeplabv2
from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ModelMeta, Normalization
from tests.helpers import write_code_pickle

from .reference_deeplab import RefResNetMulti


def _meta(n):
    names = default_class_names(n)
    return ModelMeta(num_classes=n, class_names=names, palette=palette_for(names))


def _randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_round_trip_weights_only(tmp_path):
    model = deeplabv2("resnet18", num_classes=4).eval()
    _randomise_bn(model)
    meta = _meta(4).with_(normalization=Normalization.imagenet())
    path = save_checkpoint(tmp_path / "m.pt", model, meta, training={"iteration": 3})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "mslseg-checkpoint" and raw["training"]["iteration"] == 3
    loaded, meta2 = load_model(path)
    assert meta2 == meta
    x = torch.randn(1, 3, 41, 41)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


@pytest.mark.parametrize("protocol", [2, 4])
def test_load_refuses_code_and_runs_nothing(tmp_path, protocol):
    marker = tmp_path / "pwned"

    path = write_code_pickle(tmp_path / "evil.pt", marker, lambda obj: {"format": "mslseg-checkpoint", "x": obj},
                             protocol)
    with pytest.raises(ModelFormatError, match="refused" if protocol == 2 else "not a checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [(None, "does not exist"), (b"", "empty"),
                                            (b"not a checkpoint", "not a checkpoint"),
                                            (b"\x80\x02garbage", "not a")])
def test_bad_files_are_clear_errors(tmp_path, content, match):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=match):
        load_model(path)


def test_foreign_state_dict_is_not_an_mslseg_checkpoint(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelFormatError, match="mslseg convert"):
        load_model(path)


def test_strip_wrappers():
    state = {"module.Scale.conv1.weight": 1, "module.Scale.layer5.conv2d_list.0.weight": 2}
    assert set(strip_wrappers(state)) == {"conv1.weight", "layer5.conv2d_list.0.weight"}
    assert set(strip_wrappers({"conv1.weight": 1, "fc.weight": 2})) == {"conv1.weight", "fc.weight"}


def test_msl_key_mapping_multi_and_single_level():
    mapped = map_msl_keys({"module.layer5.conv2d_list.3.bias": 1, "module.layer6.conv2d_list.0.weight": 2,
                           "module.layer3.4.bn2.running_var": 3})
    assert mapped.state == {"head_aux.convs.3.bias": 1, "head_main.convs.0.weight": 2,
                            "backbone.layer3.4.bn2.running_var": 3}
    single = map_msl_keys({"layer5.conv2d_list.1.weight": 1})
    assert single.state == {"head_main.convs.1.weight": 1}


def test_official_msl_checkpoint_computes_what_the_reference_computes(tmp_path):
    torch.manual_seed(0)
    ref = RefResNetMulti([3, 4, 6, 3], num_classes=5).eval()
    _randomise_bn(ref)
    state = {f"module.{k}": v for k, v in ref.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "GTA5_msl.pth"
    torch.save({"state_dict": state}, path)
    model, meta = import_foreign(path, "msl")
    assert model.spec.backbone == "resnet50" and model.spec.branches == 2 and model.spec.multi_level
    assert meta.normalization == Normalization.official()
    assert str(meta.train_size) == "1024x512"  # where the released models were adapted and scored
    own = model.state_dict()
    for k, v in ref.state_dict().items():
        if "num_batches" in k:
            continue
        ours = k.replace("layer5.conv2d_list", "head_aux.convs").replace("layer6.conv2d_list", "head_main.convs")
        ours = ours if ours.startswith("head_") else f"backbone.{ours}"
        assert torch.equal(own[ours], v), k
    x = torch.randn(1, 3, 57, 73)
    with torch.no_grad():
        ref_aux, ref_main = ref(x)
        main, aux = model.forward_with_aux(x)
    assert torch.allclose(main, ref_main, atol=1e-5)
    assert torch.allclose(aux, ref_aux, atol=1e-5)


def test_deeplab_init_file_skips_coco_classifier(tmp_path):
    ref = RefResNetMulti([3, 4, 6, 3], num_classes=91)
    state = {f"Scale.{k}": v for k, v in ref.state_dict().items() if not k.startswith("layer6")}
    path = tmp_path / "init.pth"
    torch.save(state, path)
    model, _ = import_foreign(path, "deeplab-imagenet", num_classes=19)
    assert model.spec.num_classes == 19 and model.spec.branches == 4
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)


def test_torchvision_resnet_missing_keys_named(tmp_path):
    model = deeplabv2("resnet18", num_classes=3)
    state = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    state["fc.weight"] = torch.zeros(1000, 512)
    del state["layer4.1.conv2.weight"]
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with pytest.raises(ModelFormatError, match="layer4.1.conv2.weight"):
        import_foreign(path, "torchvision-resnet")
    loaded, meta = import_foreign(path, "torchvision-resnet", num_classes=3, partial=True)
    assert meta.normalization == Normalization.imagenet()
    assert torch.equal(loaded.backbone.layer1[0].conv1.weight, model.backbone.layer1[0].conv1.weight)


def test_shape_mismatch_is_an_error(tmp_path):
    model = deeplabv2("resnet18", num_classes=3)
    state = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ModelFormatError, match="shapes do not match"):
        import_foreign(path, "torchvision-resnet")


# --- a network of your own, loaded from another folder than the one it was trained in ---------------

# a user's nets.py: marks its own import, so a test sees what was imported
NETS_PY = ("from pathlib import Path\nPath(__file__).with_suffix('.imported').touch()\n"
           "from tests.mslseg.byo_nets import build_net  # noqa: E402,F401\n")


def _nets(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nets.py").write_text(NETS_PY)
    return folder / "nets.py"


@pytest.fixture
def trained_in_a(tmp_path, monkeypatch):
    """A checkpoint of python:nets.py:build_net saved in folder a; the test then runs in folder b."""
    from mslseg.models.factory import FactoryModel

    nets = _nets(tmp_path / "a")
    monkeypatch.chdir(nets.parent)
    path = save_checkpoint(tmp_path / "byo.pt", FactoryModel("python:nets.py:build_net", 3).eval(), _meta(3))
    nets.with_suffix(".imported").unlink()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    return path, nets


def test_factory_checkpoint_records_its_code_and_loads_from_another_folder(trained_in_a):
    path, nets = trained_in_a
    assert load_checkpoint(path)["spec"]["code"] == {"function": "build_net", "file": str(nets),
                                                     "file_name": "nets.py"}
    with pytest.raises(ModelFormatError, match=re.escape(f"pass --factory python:{nets}:build_net")):
        load_model(path)
    assert not nets.with_suffix(".imported").exists()  # the recorded code is never imported on its own
    for named in (f"python:{nets}:build_net", "python:../a/nets.py:build_net"):
        model, _ = load_model(path, factory=named)
        assert model.arch == named and nets.with_suffix(".imported").exists()


def test_factory_checkpoint_says_what_differs(trained_in_a):
    path, nets = trained_in_a
    here = _nets(Path.cwd())  # another nets.py while the recorded one is still there
    cases = [("python:nets.py:build_net", f"(recorded file {nets}, given {here})"),
             (f"python:{nets}:build_other", "(recorded function build_net, given build_other)"),
             ("python:tests.mslseg.byo_nets:build_net", f"(recorded file {nets}, given module tests.mslseg.byo_nets)")]
    for named, differs in cases:
        with pytest.raises(ModelFormatError, match=re.escape(f"you named {named}, another {differs}")):
            load_model(path, factory=named)
    assert not here.with_suffix(".imported").exists() and not nets.with_suffix(".imported").exists()


def test_factory_checkpoint_whose_code_moved_loads_by_file_name_and_says_so(trained_in_a, caplog):
    path, nets = trained_in_a
    nets.unlink()
    here = _nets(Path.cwd())
    with caplog.at_level(logging.WARNING, logger="mslseg.models.factory"):
        model, _ = load_model(path, factory="python:nets.py:build_net")
    assert f"its code {nets} no longer exists; using {here}" in caplog.text
    other = Path.cwd() / "other.py"
    other.write_text(NETS_PY)
    with pytest.raises(ModelFormatError, match=re.escape(f"(recorded file {nets} (no longer there), given {other})")):
        load_model(path, factory="python:other.py:build_net")


def test_older_factory_checkpoint_with_a_relative_path_loads_with_the_right_factory(trained_in_a, caplog):
    path, nets = trained_in_a
    data = load_checkpoint(path)
    del data["spec"]["code"]  # as written before checkpoints recorded their code
    with pytest.raises(ModelFormatError, match=re.escape("pass --factory python:PATH/TO/nets.py:build_net")):
        model_from_checkpoint(data, "old.pt")
    with caplog.at_level(logging.WARNING, logger="mslseg.models.factory"):
        model, _ = model_from_checkpoint(data, "old.pt", factory="python:../a/nets.py:build_net")
    assert f"old.pt records nets.py relative to the folder it was trained in; using {nets}" in caplog.text
    with pytest.raises(ModelFormatError, match=re.escape("(recorded file nets.py (relative to the folder it was "
                                                         f"trained in), given {Path.cwd() / 'other.py'})")):
        model_from_checkpoint(data, "old.pt", factory="python:other.py:build_net")
