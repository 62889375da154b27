"""The engine sidecar reader, and a clear message where TensorRT is absent (no GPU here)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from mslseg.runtime.backends.trt_backend import read_engine_meta
from mslseg.runtime.errors import MissingDependencyError, ModelFormatError
from tests.runtime import models


def _engine(tmp_path, sidecar):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    if sidecar is not None:
        (tmp_path / "model.json").write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    return engine


def test_sidecar_as_export_writes_it(tmp_path):
    build = {"version": "10.9", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    meta = models.meta().with_(input_kind="uint8", output_kind="labels", extra={"tensorrt": build})
    got, info = read_engine_meta(_engine(tmp_path, meta.to_dict()))
    assert got == meta and info["gpu"] == "NVIDIA H100"


def test_sidecar_with_meta_key_and_extra_top_level_keys(tmp_path):
    meta = models.meta()
    got, info = read_engine_meta(_engine(tmp_path, {"meta": meta.to_dict(), "tensorrt_version": "11.0"}))
    assert got == meta and info == {"tensorrt_version": "11.0"}
    got, info = read_engine_meta(_engine(tmp_path, {**meta.to_dict(), "gpu_name": "Orin"}))
    assert got == meta and info == {"gpu_name": "Orin"}


@pytest.mark.parametrize("sidecar, match", [(None, "no sidecar model.json"), ("{oops", "not valid JSON"),
                                            ("[1]", "not a JSON object"), ({"num_classes": 2}, "malformed")])
def test_bad_sidecars(tmp_path, sidecar, match):
    with pytest.raises(ModelFormatError, match=match):
        read_engine_meta(_engine(tmp_path, sidecar))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_engine_without_tensorrt_says_what_to_install(tmp_path):
    from mslseg.runtime import Segmenter

    engine = _engine(tmp_path, models.meta().to_dict())
    with pytest.raises(MissingDependencyError, match=r"mslseg\[tensorrt\]"):
        Segmenter(engine)
