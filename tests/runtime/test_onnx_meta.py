"""The metadata reader that needs neither `onnx` nor a session agrees with the onnx package."""

from __future__ import annotations

import pickle
import re
import zipfile

import onnx
import pytest

from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ONNX_METADATA_KEY
from mslseg.runtime.onnx_reader import read_metadata_props, read_onnx_meta
from tests.runtime import models


def test_reads_what_onnx_reads(tmp_path):
    proto = onnx.load(str(models.onnx_model("uint8_labels")))
    proto.metadata_props.add(key="other", value="ünïcode")
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    assert read_metadata_props(path) == {p.key: p.value for p in proto.metadata_props}
    meta = read_onnx_meta(path)
    assert meta.input_kind == "uint8" and meta.output_kind == "labels"
    assert meta.to_json() == {p.key: p.value for p in proto.metadata_props}[ONNX_METADATA_KEY]


@pytest.mark.parametrize("content, match", [(b"", "empty"), (b"hello world, not protobuf", "not an ONNX"),
                                            (b"\x08\x07", "no mslseg metadata")])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=match):
        read_onnx_meta(path)


def _torch_zip(path):
    """What torch.save writes (PyTorch >= 1.6): a zip archive holding data.pkl."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": {}}, protocol=2))


@pytest.mark.parametrize("write", [_torch_zip, lambda p: p.write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))],
                         ids=["zip", "legacy-pickle"])
def test_a_pytorch_checkpoint_named_onnx_says_so(tmp_path, write):
    path = tmp_path / "model.onnx"
    write(path)
    with pytest.raises(ModelFormatError) as exc:
        read_onnx_meta(path)
    assert str(exc.value) == (f"{path} is not an ONNX file (it looks like a PyTorch checkpoint: rename it to .pt, "
                              "or export it with `mslseg export`)")


def test_other_bytes_are_not_an_onnx_model_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x0b\x0f garbage")  # field 1 of wire type 3: the protobuf reader's own words stay inside
    with pytest.raises(ModelFormatError, match=re.escape(f"{path} is not an ONNX model file (")) as exc:
        read_onnx_meta(path)
    assert "PyTorch" not in str(exc.value) and "mslseg export" in str(exc.value)
