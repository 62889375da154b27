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

from mslseg.export import EngineOptions, ProfilePoint, build_engine, resolve_profile, sidecar_path, write_sidecar
from mslseg.runtime.errors import InputError, MissingDependencyError, ModelFormatError
from mslseg.runtime.metadata import ModelMeta
from mslseg.runtime.sizes import Size
from mslseg.runtime.trt_backend import read_engine_meta
from tests.export.conftest import SIZE


def test_profile_sizes_are_width_by_height(model_meta):
    _, meta = model_meta  # trained at SIZE: 96 wide, 64 high
    p = resolve_profile(meta, None)
    assert (p.min, p.opt, p.max) == (ProfilePoint(1, Size(48, 32)), ProfilePoint(1, SIZE), ProfilePoint(1, SIZE))
    p = resolve_profile(meta, None, max_size="192x128", max_batch=4)
    assert p.max == ProfilePoint(4, Size(192, 128)) and str(p.max) == "192x128 at batch 4"
    assert p.for_layout("uint8")["max"] == [4, 128, 192, 3]  # tensor order: N, H, W, C
    assert p.for_layout("float")["min"] == [1, 3, 32, 48]
    p = resolve_profile(meta, None, opt_size=Size(width=64, height=32), opt_batch=2)
    assert (p.min, p.opt, p.max) == (ProfilePoint(1, Size(32, 16)), ProfilePoint(2, Size(64, 32)),
                                     ProfilePoint(2, Size(64, 32)))
    with pytest.raises(InputError, match="min <= opt"):
        resolve_profile(meta, None, min_batch=2)
    with pytest.raises(InputError, match="min <= opt"):
        resolve_profile(meta, None, min_size="96x128", opt_size="96x64")
    for bad in ("", "512", "ax3", "1x512x1024", "0x8"):  # the old BATCHxHxW form is refused, not misread
        with pytest.raises(InputError, match="WIDTHxHEIGHT"):
            resolve_profile(meta, None, opt_size=bad)
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        resolve_profile(meta, None, opt_size=(64, 96))  # a bare tuple is ambiguous
    with pytest.raises(InputError, match="--max-batch"):
        resolve_profile(meta, None, max_batch=0)
    fixed = ProfilePoint(1, Size(64, 48))
    assert resolve_profile(meta, fixed).opt == fixed
    assert resolve_profile(meta, fixed, opt_size="64x48", max_batch=1).max == fixed
    with pytest.raises(InputError, match=r"fixed input 64x48 at batch 1; --opt 64x64, --max-batch 2"):
        resolve_profile(meta, fixed, opt_size="64x64", max_batch=2)


def test_engine_options_are_checked_on_creation():
    assert EngineOptions(opt_size="1024x512").opt_size == Size(1024, 512)
    for kwargs, match in [({"hardware_compatibility": "any"}, "hardware compatibility"),
                          ({"workspace_gib": 0}, "workspace"), ({"dla_core": -1}, "--dla-core"),
                          ({"min_size": "512x"}, "--min '512x'"), ({"opt_batch": 1.5}, "--opt-batch")]:
        with pytest.raises(InputError, match=match):
            EngineOptions(**kwargs)


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
    engine = build_engine(fp16, tmp_path / "m.engine", max_size="96x64", max_batch=2, workspace_gib=1)
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
    assert trt["profile_sizes"] == {"min": "48x32", "opt": "96x64", "max": "96x64"}
    assert trt["profile_batches"] == {"min": 1, "opt": 1, "max": 2}
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


def test_overwrite_false_refuses_an_engine_or_sidecar_before_tensorrt(labels_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # refused before TensorRT is needed
    engine = tmp_path / "m.engine"
    for existing in (engine, sidecar_path(engine)):
        existing.write_bytes(b"EARLIER")
        with pytest.raises(InputError, match=rf"{existing.name} already exists; pass --overwrite"):
            build_engine(labels_onnx, engine, overwrite=False)
        assert existing.read_bytes() == b"EARLIER"
        existing.unlink()
