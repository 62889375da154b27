"""An engine from another TensorRT version or GPU is refused before deserialisation."""

from mslseg.runtime.backends.trt_backend import engine_mismatch

H100 = {"version": "10.3.0", "gpu": "NVIDIA H100", "compute_capability": "9.0", "hardware_compatibility": "none"}


def test_same_machine_is_fine():
    assert engine_mismatch(H100, trt_version="10.3.0.26", gpu="NVIDIA H100", compute_capability="9.0") is None


def test_other_tensorrt_version_is_refused():
    why = engine_mismatch(H100, trt_version="10.4.0", gpu="NVIDIA H100", compute_capability="9.0")
    assert "TensorRT 10.3.0" in why and "10.4.0" in why


def test_version_compatible_engine_runs_on_the_same_or_a_later_tensorrt():
    # the support matrix: later releases of the same major, and TensorRT 10 engines on 11; nothing older
    info = H100 | {"version_compatible": True}
    for here in ("10.3.0", "10.3.0.26", "10.7.0", "10.16.1", "11.0.0", "11.4.1.5"):
        assert engine_mismatch(info, trt_version=here, gpu="NVIDIA H100", compute_capability="9.0") is None, here
    for here in ("10.2.1", "9.3.0", "12.0.0"):
        why = engine_mismatch(info, trt_version=here, gpu="NVIDIA H100", compute_capability="9.0")
        assert f"this machine has TensorRT {here}" in why and "10.3.0 or a later 10.x or 11.x" in why
    eleven = info | {"version": "11.1.0"}
    assert engine_mismatch(eleven, trt_version="11.4.0", gpu="NVIDIA H100", compute_capability="9.0") is None
    why = engine_mismatch(eleven, trt_version="11.0.0", gpu="NVIDIA H100", compute_capability="9.0")
    assert "11.1.0 or a later 11.x)" in why


def test_other_gpu_is_refused_unless_hardware_compatible():
    why = engine_mismatch(H100, trt_version="10.3.0", gpu="NVIDIA A100", compute_capability="8.0")
    assert "compute capability 9.0" in why and "A100" in why
    ampere = H100 | {"hardware_compatibility": "ampere+"}
    assert engine_mismatch(ampere, trt_version="10.3.0", gpu="NVIDIA A100", compute_capability="8.0") is None
    assert "Ampere" in engine_mismatch(ampere, trt_version="10.3.0", gpu="Tesla T4", compute_capability="7.5")


def test_same_compute_capability_engine_needs_that_capability():
    same_cc = H100 | {"hardware_compatibility": "same-cc"}
    assert engine_mismatch(same_cc, trt_version="10.3.0", gpu="NVIDIA H200", compute_capability="9.0") is None
    assert "compute capability 9.0" in engine_mismatch(same_cc, trt_version="10.3.0", gpu="NVIDIA A100",
                                                       compute_capability="8.0")
