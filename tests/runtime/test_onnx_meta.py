"""The metadata reader that needs neither `onnx` nor a session agrees with the onnx package."""

from __future__ import annotations

import onnx
import pytest

from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ONNX_METADATA_KEY
from mslseg.runtime.onnx_meta import read_metadata_props, read_onnx_meta
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
