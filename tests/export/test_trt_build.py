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
from mslseg.runtime.backends.trt_backend import read_engine_meta
from mslseg.runtime.errors import InputError, MissingDependencyError, ModelFormatError
from mslseg.runtime.metadata import ModelMeta
from mslseg.runtime.sizes import Size
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
    with pytest.raises(MissingDependencyError, match=r"pip install 'mslseg\[gpu,tensorrt\]'") as err:
        build_engine(labels_onnx, tmp_path / "m.engine")
    assert "NVIDIA GPU" in str(err.value)
    assert list(tmp_path.iterdir()) == []


class _Recorder:
    """A stand-in for the parts of the tensorrt module that build_engine uses."""

    def __init__(self, version: str, has_strongly_typed: bool = True) -> None:
        self.calls: list[tuple] = []
        rec = self
        mod = types.ModuleType("tensorrt")
        mod.__version__ = version
        mod.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        # a TensorRT without STRONGLY_TYPED stands for one older than the flag (new in 9.x)
        mod.NetworkDefinitionCreationFlag = types.SimpleNamespace(
            **({"STRONGLY_TYPED": 0} if has_strongly_typed else {}))
        major, minor = (int(v) for v in version.split(".")[:2])
        weak = {"FP16": "FP16", "INT8": "INT8"} if major < 11 else {}  # TensorRT 11 removed them
        mod.BuilderFlag = types.SimpleNamespace(VERSION_COMPATIBLE="VC", GPU_FALLBACK="GPU_FALLBACK", **weak)
        mod.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        levels = {"SAME_COMPUTE_CAPABILITY": "SAME_CC"} if (major, minor) >= (10, 9) else {}  # new in 10.9
        mod.HardwareCompatibilityLevel = types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS", **levels)

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
                return None if bytes(data) == b"FOREIGN" else Cache()  # another version's bytes

            def set_timing_cache(self, cache, ignore_mismatch):
                if cache is None:  # as the pybind11 binding does
                    raise TypeError("set_timing_cache(): incompatible function arguments")
                return True

            def __setattr__(self, name, value):
                rec.calls.append(("config", name, value))

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


@pytest.mark.parametrize("version", ["10.9.0", "11.1.0"])
def test_build_against_a_stand_in(labels_onnx, tmp_path, monkeypatch, version):
    rec = _Recorder(version)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    fp16 = _fp16_copy(labels_onnx, tmp_path)  # the flag follows the metadata
    cache = tmp_path / f"m.trt{version.split('.')[0]}.timing.cache"  # one per TensorRT major
    cache.write_bytes(b"OLD")
    engine = build_engine(fp16, tmp_path / "m.engine", max_size="96x64", max_batch=2, workspace_gib=1)
    assert engine.read_bytes() == b"ENGINE-BYTES"  # the engine bytes as they are, nothing prepended
    assert cache.read_bytes() == b"CACHE"
    assert ("cache_in", b"OLD") in rec.calls
    assert ("network", 1) in rec.calls  # strongly typed on 10 and 11 alike
    assert not [c for c in rec.calls if c[0] == "flag"]  # no precision flag: the file's types run
    assert ("profile", ("input", [1, 32, 48, 3], [1, 64, 96, 3], [2, 64, 96, 3])) in rec.calls
    assert ("pool", "WORKSPACE", 1 << 30) in rec.calls
    side = json.loads(sidecar_path(engine).read_text())
    trt = side["extra"]["tensorrt"]
    assert trt["version"] == version and trt["precision"] == "fp16" and trt["strongly_typed"] is True
    assert trt["profile"]["max"] == [2, 64, 96, 3] and "compute_capability" in trt and "gpu" in trt
    assert trt["profile_sizes"] == {"min": "48x32", "opt": "96x64", "max": "96x64"}
    assert trt["profile_batches"] == {"min": 1, "opt": 1, "max": 2}
    assert ModelMeta.from_dict(side).output_kind == "labels"


@pytest.mark.parametrize("precision,flag", [("fp16", "FP16"), ("int8", "INT8")])
def test_precision_flags_only_when_weak_typing_is_asked_for_or_unavailable(
        labels_onnx, tmp_path, monkeypatch, caplog, precision, flag):
    onnx_path = _with_precision(labels_onnx, tmp_path, precision)
    runs = {}
    for name, has_flag, kwargs in [("opt-out", True, {"strongly_typed": False}),
                                   ("no STRONGLY_TYPED", False, {})]:
        rec = _Recorder("10.9.0", has_strongly_typed=has_flag)
        monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
        caplog.clear()
        with caplog.at_level("WARNING", logger="mslseg.export.trt_build"):
            engine = build_engine(onnx_path, tmp_path / f"{name}.engine", timing_cache=False, **kwargs)
        runs[name] = [r.getMessage() for r in caplog.records]
        assert ("network", 0) in rec.calls and [c for c in rec.calls if c[0] == "flag"] == [("flag", flag)]
        assert json.loads(sidecar_path(engine).read_text())["extra"]["tensorrt"]["strongly_typed"] is False
    assert runs["opt-out"] == []  # asked for: nothing to warn about
    assert len(runs["no STRONGLY_TYPED"]) == 1
    assert "TensorRT 10.9.0 cannot build strongly typed networks" in runs["no STRONGLY_TYPED"][0]


def test_tensorrt_11_without_the_flag_is_strongly_typed_all_the_same(labels_onnx, tmp_path, monkeypatch, caplog):
    rec = _Recorder("11.1.0", has_strongly_typed=False)  # deprecated in 11.0: ignored, and may go
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    with caplog.at_level("WARNING", logger="mslseg.export.trt_build"):
        engine = build_engine(_fp16_copy(labels_onnx, tmp_path), tmp_path / "m.engine", timing_cache=False)
    assert ("network", 0) in rec.calls and not [c for c in rec.calls if c[0] == "flag"] and not caplog.records
    assert json.loads(sidecar_path(engine).read_text())["extra"]["tensorrt"]["strongly_typed"] is True


def test_strongly_typed_true_without_the_flag_is_refused_before_parsing(labels_onnx, tmp_path, monkeypatch):
    rec = _Recorder("10.9.0", has_strongly_typed=False)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    with pytest.raises(MissingDependencyError, match=r"TensorRT 10\.9\.0 cannot build strongly typed.*"
                                                     r"drop strongly_typed=True"):
        build_engine(labels_onnx, tmp_path / "m.engine", strongly_typed=True)
    assert rec.calls == []


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


def _build(labels_onnx, tmp_path, monkeypatch, version, **kwargs):
    rec = _Recorder(version)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    build_engine(labels_onnx, tmp_path / "m.engine", **kwargs)
    return rec


def test_a_timing_cache_of_another_tensorrt_version_starts_empty(labels_onnx, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "m.cache"
    cache.write_bytes(b"FOREIGN")  # create_timing_cache returns None for these bytes
    with caplog.at_level("WARNING", logger="mslseg.export.trt_build"):
        rec = _build(labels_onnx, tmp_path, monkeypatch, "10.9.0", timing_cache=cache)
    assert [c for c in rec.calls if c[0] == "cache_in"] == [("cache_in", b"FOREIGN"), ("cache_in", b"")]
    assert [r.getMessage() for r in caplog.records] == [
        f"timing cache {cache} is from another TensorRT version or GPU; starting an empty one"]
    assert cache.read_bytes() == b"CACHE" and (tmp_path / "m.engine").read_bytes() == b"ENGINE-BYTES"


@pytest.mark.parametrize("version", ["10.9.0", "11.1.0"])
def test_same_cc_from_tensorrt_10_9(labels_onnx, tmp_path, monkeypatch, version):
    rec = _build(labels_onnx, tmp_path, monkeypatch, version, hardware_compatibility="same-cc")
    assert ("config", "hardware_compatibility_level", "SAME_CC") in rec.calls


@pytest.mark.parametrize("version, kwargs, error, match", [
    ("10.8.0", {"hardware_compatibility": "same-cc"}, MissingDependencyError,
     r"same-cc needs TensorRT 10\.9 or later and this is TensorRT 10\.8\.0; upgrade it"),
    ("11.1.0", {"strongly_typed": False}, InputError,
     r"TensorRT 11\.1\.0 builds strongly typed networks only .*strongly_typed=False cannot apply"),
    ("11.1.0", {"dla_core": 0}, InputError, r"TensorRT 11\.1\.0 cannot build for DLA .*or drop --dla-core"),
    ("11.4.0", {"dla_core": 0}, InputError, r"TensorRT 11\.4\.0 cannot build for DLA"),
])
def test_what_this_tensorrt_cannot_do_is_one_line_before_the_build(labels_onnx, tmp_path, monkeypatch, version,
                                                                   kwargs, error, match):
    fp16 = _fp16_copy(labels_onnx, tmp_path)  # DLA takes fp16 or int8 files only
    rec = _Recorder(version)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    with pytest.raises(error, match=match) as err:
        build_engine(fp16, tmp_path / "m.engine", **kwargs)
    assert "\n" not in str(err.value)
    assert rec.calls == [] and not (tmp_path / "m.engine").exists()  # before TensorRT parses anything


@pytest.mark.parametrize("version", ["10.9.0", "11.4.1"])
def test_dla_where_tensorrt_has_it_asks_the_builder_for_cores(labels_onnx, tmp_path, monkeypatch, version):
    fp16 = _fp16_copy(labels_onnx, tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder(version).module)
    with pytest.raises(InputError, match=r"DLA core 0 does not exist here \(0 DLA cores\)"):
        build_engine(fp16, tmp_path / "m.engine", dla_core=0)


def _fp16_copy(labels_onnx, tmp_path):
    return _with_precision(labels_onnx, tmp_path, "fp16")


def _with_precision(labels_onnx, tmp_path, precision):
    """A copy whose metadata says `precision` (the builder flags follow the metadata)."""
    import onnx

    from mslseg.export.onnx_contract import load_meta, write_meta

    proto = onnx.load(str(labels_onnx))
    meta = load_meta(proto)
    extra = {**meta.extra, "int8_layout": "tensorrt"} if precision == "int8" else meta.extra
    write_meta(proto, meta.with_(precision=precision, extra=extra))
    path = tmp_path / f"{precision}.onnx"
    onnx.save(proto, str(path))
    return path
