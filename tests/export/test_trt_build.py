"""Everything around the TensorRT build that runs without TensorRT, and the build against a stand-in.

The stand-in records what build_engine asks of TensorRT, so the TensorRT 10 and 11 paths (flags,
strong typing, profile, timing cache, the bytes written, the sidecar) are checked here; that the
calls exist in TensorRT itself is checked by scripts/gpu_check.sh on a GPU machine.
"""

from __future__ import annotations

import json
import sys
import types

import pytest

from mslseg.export import build_engine, parse_shape, resolve_profile, sidecar_path, write_sidecar
from mslseg.runtime.errors import InputError, MissingDependencyError, ModelFormatError
from mslseg.runtime.metadata import ModelMeta
from mslseg.runtime.trt_backend import read_engine_meta
from tests.export.conftest import SIZE


def test_parse_shape():
    assert parse_shape("4x512x1024") == (4, 512, 1024)
    assert parse_shape("512x1024") == (1, 512, 1024)
    for bad in ("", "512", "ax3", "1x2x3x4", "0x8x8"):
        with pytest.raises(InputError):
            parse_shape(bad)


def test_resolve_profile(model_meta):
    _, meta = model_meta
    p = resolve_profile(meta, None)
    assert (p.min, p.opt, p.max) == ((1, 32, 48), (1, *SIZE), (1, *SIZE))
    p = resolve_profile(meta, None, max_shape="4x128x192")
    assert p.max == (4, 128, 192)
    assert p.for_layout("uint8")["max"] == [4, 128, 192, 3]
    assert p.for_layout("float")["min"] == [1, 3, 32, 48]
    with pytest.raises(InputError, match="min <= opt"):
        resolve_profile(meta, None, min_shape="2x64x96", opt_shape="1x64x96")
    assert resolve_profile(meta, (1, 48, 64)).opt == (1, 48, 64)
    with pytest.raises(InputError, match="fixed input shape"):
        resolve_profile(meta, (1, 48, 64), opt_shape="1x64x64")


def test_sidecar_reads_back_as_model_meta(model_meta, tmp_path):
    _, meta = model_meta
    engine = tmp_path / "model.engine"
    path = write_sidecar(engine, meta, {"version": "10.9.0", "gpu": "NVIDIA X", "compute_capability": "8.9"})
    assert path == sidecar_path(engine) == tmp_path / "model.json"
    back = ModelMeta.from_json(path.read_text())
    assert back.extra["tensorrt"]["gpu"] == "NVIDIA X" and back.class_names == meta.class_names


def test_missing_tensorrt_is_one_clear_error(labels_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # absent even where it is installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'mslseg\[gpu\]'") as err:
        build_engine(labels_onnx, tmp_path / "m.engine")
    assert "NVIDIA GPU" in str(err.value)
    assert list(tmp_path.iterdir()) == []


class _Recorder:
    """A stand-in for the parts of the tensorrt module that build_engine uses."""

    def __init__(self, version: str) -> None:
        self.calls: list[tuple] = []
        rec = self
        mod = types.ModuleType("tensorrt")
        mod.__version__ = version
        mod.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        mod.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
        mod.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", VERSION_COMPATIBLE="VC",
                                                GPU_FALLBACK="GPU_FALLBACK")
        mod.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        mod.HardwareCompatibilityLevel = types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS")

        class Tensor:
            name, shape = "input", (-1, -1, -1, 3)

        class Network:
            def get_input(self, i):
                return Tensor()

        class Parser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                rec.calls.append(("parse", path))
                return True

        class Cache:
            def serialize(self):
                return b"CACHE"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                rec.calls.append(("pool", pool, size))

            def set_flag(self, flag):
                rec.calls.append(("flag", flag))

            def create_timing_cache(self, data):
                rec.calls.append(("cache_in", bytes(data)))
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                return True

            def get_timing_cache(self):
                return Cache()

            def add_optimization_profile(self, profile):
                rec.calls.append(("profile", profile.shapes))

        class Profile:
            def set_shape(self, name, mn, opt, mx):
                self.shapes = (name, list(mn), list(opt), list(mx))

        class Builder:
            num_DLA_cores = 0

            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.calls.append(("network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return memoryview(b"ENGINE-BYTES")

        mod.Builder, mod.OnnxParser = Builder, Parser
        self.module = mod


@pytest.mark.parametrize("version,strong", [("10.9.0", False), ("11.1.0", True)])
def test_build_against_a_stand_in(labels_onnx, tmp_path, monkeypatch, version, strong):
    rec = _Recorder(version)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    fp16 = tmp_path / "fp16.onnx"
    import onnx

    from mslseg.export.onnx_meta import load_meta, write_meta

    proto = onnx.load(str(labels_onnx))
    write_meta(proto, load_meta(proto).with_(precision="fp16"))  # the flag follows the metadata
    onnx.save(proto, str(fp16))
    (tmp_path / "m.timing.cache").write_bytes(b"OLD")
    engine = build_engine(fp16, tmp_path / "m.engine", max_shape="2x64x96", workspace_gib=1)
    assert engine.read_bytes() == b"ENGINE-BYTES"  # the engine bytes as they are, nothing prepended
    assert (tmp_path / "m.timing.cache").read_bytes() == b"CACHE"
    assert ("cache_in", b"OLD") in rec.calls
    assert ("network", 1 if strong else 0) in rec.calls
    assert (("flag", "FP16") in rec.calls) != strong  # TensorRT 10: flag; 11: strongly typed
    assert ("profile", ("input", [1, 32, 48, 3], [1, 64, 96, 3], [2, 64, 96, 3])) in rec.calls
    assert ("pool", "WORKSPACE", 1 << 30) in rec.calls
    side = json.loads(sidecar_path(engine).read_text())
    trt = side["extra"]["tensorrt"]
    assert trt["version"] == version and trt["precision"] == "fp16" and trt["strongly_typed"] == strong
    assert trt["profile"]["max"] == [2, 64, 96, 3] and "compute_capability" in trt and "gpu" in trt
    assert ModelMeta.from_dict(side).output_kind == "labels"


def test_a_rebuild_killed_before_its_sidecar_leaves_no_stale_sidecar(labels_onnx, tmp_path, monkeypatch):
    from mslseg.export import trt_build

    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder("10.9.0").module)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"OLD-ENGINE")
    write_sidecar(engine, ModelMeta(num_classes=1, class_names=("a",), palette=((0, 0, 0),)), {"version": "10.1.0"})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process died between the engine and its sidecar

    monkeypatch.setattr(trt_build, "write_sidecar", killed)
    with pytest.raises(KeyboardInterrupt):
        build_engine(labels_onnx, engine)
    assert engine.read_bytes() == b"ENGINE-BYTES"
    with pytest.raises(ModelFormatError, match="has no sidecar"):  # not the old build's description
        read_engine_meta(engine)
