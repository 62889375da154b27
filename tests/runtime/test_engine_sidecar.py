"""One owner for the engine sidecar's path and for reading a compute capability
(mslseg.runtime.backends.engine_sidecar); "unknown", what a build without cuda-python or torch
writes, is a capability nobody can compare, not a crash."""

import pytest

from mslseg.runtime.backends import trt_backend
from mslseg.runtime.backends.engine_sidecar import parse_capability, sidecar_path
from mslseg.runtime.backends.trt_backend import engine_mismatch


@pytest.mark.parametrize(("text", "parsed"), [
    ("8.6", (8, 6)), ("9.0", (9, 0)), ("12.0", (12, 0)), ("10.3", (10, 3)), ("sm_86", (8, 6)), ("sm90", (9, 0)),
    ("sm_120", (12, 0)), (" 7.5 ", (7, 5)), ("unknown", None), ("", None), (None, None), ("8", None), ("8.x", None),
])
def test_parse_capability(text, parsed):
    assert parse_capability(text) == parsed


def test_capabilities_compare_as_numbers_not_as_decimals():
    assert parse_capability("12.0") > parse_capability("9.0") > parse_capability("8.10") > parse_capability("8.9")


def test_an_unknown_capability_is_never_a_crash_nor_a_refusal():
    built = {"version": "10.3.0", "gpu": "unknown", "compute_capability": "unknown"}
    for level in ("none", "same-cc", "ampere+"):
        info = built | {"hardware_compatibility": level}
        assert engine_mismatch(info, trt_version="10.3.0", gpu="NVIDIA H200", compute_capability="9.0") is None
        known = info | {"compute_capability": "9.0"}
        assert engine_mismatch(known, trt_version="10.3.0", gpu="?", compute_capability="unknown") is None


def test_the_builder_and_the_runtime_use_the_owners_sidecar_path(tmp_path):
    from mslseg.export import trt_build, trt_profile
    from mslseg.runtime.metadata import ModelMeta

    assert trt_backend.sidecar_path is trt_profile.sidecar_path is trt_build.sidecar_path is sidecar_path
    assert sidecar_path(tmp_path / "model.engine") == tmp_path / "model.json"
    meta = ModelMeta(num_classes=2, class_names=("road", "sky"), palette=((0, 0, 0), (9, 9, 9)))
    written = trt_profile.write_sidecar(tmp_path / "m.plan", meta, {"version": "10.3.0", "compute_capability": "unknown"})
    read, info = trt_backend.read_engine_meta(tmp_path / "m.plan")
    assert written == tmp_path / "m.json" and read.class_names == ("road", "sky") and info["version"] == "10.3.0"
