"""ONNX Runtime providers: the list built per device, the TensorRT EP's options, and the check that a
requested GPU provider really loaded (ONNX Runtime otherwise falls back to the CPU without a word)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mslseg.runtime.backends.ort_backend import (
    CPU_EP,
    CUDA_EP,
    TRT_EP,
    check_active,
    choose_providers,
    input_dims,
    profile_shapes,
)
from mslseg.runtime.errors import MissingDependencyError, ProviderLoadError
from mslseg.runtime.metadata import ONNX_METADATA_KEY, ModelMeta
from mslseg.runtime.sizes import Size

ROOT = Path(__file__).resolve().parents[2]
GPU_EPS = [TRT_EP, CUDA_EP, CPU_EP]


def _meta(input_kind: str = "uint8", precision: str = "fp32", train_size: Size | None = Size(64, 32)) -> ModelMeta:
    names = ("a", "b", "c")
    return ModelMeta(num_classes=3, class_names=names, palette=((0, 0, 0), (255, 0, 0), (0, 255, 0)),
                     input_kind=input_kind, output_kind="labels", train_size=train_size, precision=precision)


def _labels_model(path: Path, shape: list) -> Path:
    """A tiny uint8 NHWC -> labels graph (argmax over the colour channels) carrying mslseg metadata."""
    from onnx import TensorProto, helper, save

    nodes = [helper.make_node("Cast", ["input"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ArgMax", ["f"], ["i"], axis=3, keepdims=0),
             helper.make_node("Cast", ["i"], ["output"], to=TensorProto.UINT8)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.UINT8, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.UINT8, shape[:3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key=ONNX_METADATA_KEY, value=_meta().to_json())
    save(model, str(path))
    return path


def test_tensorrt_ep_gets_no_precision_flags_and_a_profile_at_the_training_size(tmp_path):
    for precision in ("fp32", "fp16", "int8"):
        chosen = choose_providers("tensorrt", GPU_EPS, _meta(precision=precision), tmp_path,
                                  dims=[None, None, None, 3], max_batch=4)
        assert [p if isinstance(p, str) else p[0] for p in chosen] == GPU_EPS
        options = chosen[0][1]
        # fp16/int8 flags would let TensorRT lower the deliberately fp32 parts: the file's types rule
        assert not {"trt_fp16_enable", "trt_int8_enable", "trt_bf16_enable"} & set(options)
        assert options["trt_profile_opt_shapes"] == "input:4x32x64x3"  # NHWC, train size 64x32 (WxH)
        assert options["trt_profile_min_shapes"] == "input:1x32x32x3"
        assert options["trt_profile_max_shapes"] == "input:4x32x64x3"  # the runs' batch and size, no larger


def _shapes(meta, dims, **kw) -> tuple[str, str, str]:
    p = profile_shapes(meta, dims, **kw)
    return p["trt_profile_min_shapes"], p["trt_profile_opt_shapes"], p["trt_profile_max_shapes"]


def test_profile_is_derived_from_the_batch_and_the_run_size():
    meta, nhwc = _meta(), [None, None, None, 3]  # training size 64x32
    # the Segmenter's defaults: batch 1 at the training size (was batch 8 at twice it)
    assert _shapes(meta, nhwc) == ("input:1x32x32x3", "input:1x32x64x3", "input:1x32x64x3")
    # --batch 2 --size 256x128: the max is exactly what runs, tuned there
    assert _shapes(meta, nhwc, max_batch=2, max_size=Size(256, 128)) == (
        "input:1x32x32x3", "input:2x128x256x3", "input:2x128x256x3")
    # a run size under 32 pixels keeps min <= opt
    assert _shapes(meta, nhwc, max_size=Size(16, 8))[0] == "input:1x8x16x3"
    # size="native": frames of any size, up to twice the training size, tuned at the training size
    assert _shapes(meta, nhwc, max_batch=3, max_size="native") == (
        "input:1x32x32x3", "input:3x32x64x3", "input:3x64x128x3")
    # a model without a training size still gets a profile when the run size is known
    assert _shapes(_meta(train_size=None), nhwc, max_size=Size(64, 64))[2] == "input:1x64x64x3"


def test_profile_follows_the_layout_and_keeps_static_dims():
    float_meta = _meta(input_kind="float")
    assert profile_shapes(float_meta, [None, 3, None, None])["trt_profile_opt_shapes"] == "input:1x3x32x64"
    assert profile_shapes(float_meta, [2, 3, None, None], max_batch=8)["trt_profile_max_shapes"] == "input:2x3x32x64"
    assert profile_shapes(float_meta, [2, 3, 48, 64]) is None  # static: nothing to choose
    assert profile_shapes(_meta(train_size=None), [None, None, None, 3]) is None


def test_profile_options_are_checked_and_reach_the_onnx_backend(tmp_path):
    from mslseg.runtime.backends.base import backend_options
    from mslseg.runtime.errors import InputError
    from mslseg.runtime.segmenter import Segmenter

    model = _labels_model(tmp_path / "m.onnx", ["n", "h", "w", 3])
    assert {"trt_max_batch", "trt_max_size"} <= set(backend_options(model))
    with pytest.raises(InputError, match="trt_max_batch must be an integer >= 1"):
        Segmenter(model, device="cpu", trt_max_batch=0)
    with pytest.raises(InputError, match="trt_max_size '12' is not WIDTHxHEIGHT"):
        Segmenter(model, device="cpu", trt_max_size="12")
    with Segmenter(model, device="cpu", batch_size=2, trt_max_size="64x32") as seg:
        assert seg.backend_name == "onnxruntime" and seg.batch_size == 2  # no TensorRT EP: no limit


def test_onnx_runtime_logs_quietly_unless_debug(tmp_path, caplog):
    """ONNX Runtime's C++ log bypasses Python's logging: the session is created at fatal-only severity,
    at warnings (its reasons for a provider that did not load) when mslseg logs at DEBUG."""
    pytest.importorskip("onnxruntime")
    from mslseg.runtime.backends.base import open_backend

    model = _labels_model(tmp_path / "m.onnx", ["n", "h", "w", 3])
    quiet = open_backend(model, device="cpu", threads=1)
    assert quiet.session.get_session_options().log_severity_level == 4
    quiet.close()
    with caplog.at_level("DEBUG", logger="mslseg.runtime.backends.ort_backend"):
        loud = open_backend(model, device="cpu", threads=1)
        assert loud.session.get_session_options().log_severity_level == 2
        loud.close()


def _video(path: Path, frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 32))
    for i in range(frames):
        writer.write(np.full((32, 64, 3), 40 * i, np.uint8))
    writer.release()
    return path


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_infer_on_cuda_without_the_cuda_provider_prints_one_line(tmp_path):
    """`mslseg infer x.mp4 --model m.onnx --device cuda` with the CPU build of ONNX Runtime (no CUDA
    provider at all): one line on stderr, exit 1, nothing written."""
    ort = pytest.importorskip("onnxruntime")
    if CUDA_EP in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider (see the onnxruntime-gpu test below)")
    model = _labels_model(tmp_path / "m.onnx", ["n", "h", "w", 3])
    video = _video(tmp_path / "x.mp4")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "mslseg", "infer", str(video), "--model", str(model),
                          "--device", "cuda", "-o", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    lines = _stderr_lines(out.stderr)
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ONNX Runtime here lacks CUDAExecutionProvider") and "mslseg[gpu]" in lines[0]
    assert not (tmp_path / "out").exists()


def test_input_dims_are_read_before_any_session(tmp_path):
    assert input_dims(_labels_model(tmp_path / "d.onnx", ["n", "h", "w", 3])) == [None, None, None, 3]
    assert input_dims(_labels_model(tmp_path / "s.onnx", [2, 32, 64, 3])) == [2, 32, 64, 3]


def test_missing_tensorrt_ep_names_the_tensorrt_extra(tmp_path):
    with pytest.raises(MissingDependencyError, match=r"mslseg\[tensorrt\]"):
        choose_providers("tensorrt", [CUDA_EP, CPU_EP], _meta(), tmp_path)
    with pytest.raises(MissingDependencyError, match=r"mslseg\[gpu\]"):
        choose_providers("cuda", [CPU_EP], _meta(), tmp_path)


def test_a_session_on_the_cpu_fails_the_check_for_a_requested_gpu_provider(tmp_path):
    """A real session asked for a provider list, then the check against what it runs on."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(_labels_model(tmp_path / "m.onnx", ["n", "h", "w", 3])),
                                   providers=[CPU_EP])
    active = session.get_providers()
    assert active == [CPU_EP]
    check_active([CPU_EP], active, strict=True)  # asked for the CPU, runs on the CPU: fine
    with pytest.raises(ProviderLoadError, match=r"could not load CUDAExecutionProvider and would run on "
                                                r"CPUExecutionProvider: .*mslseg\[gpu\].*--device cpu"):
        check_active([(CUDA_EP, {"device_id": 0}), CPU_EP], active, strict=True)
    with pytest.raises(ProviderLoadError, match=r"TensorrtExecutionProvider.*mslseg\[tensorrt\]"):
        check_active([(TRT_EP, {}), (CUDA_EP, {}), CPU_EP], [CUDA_EP, CPU_EP], strict=True)
    check_active([(TRT_EP, {}), (CUDA_EP, {}), CPU_EP], [TRT_EP, CUDA_EP, CPU_EP], strict=True)


def test_auto_only_warns_when_a_gpu_provider_did_not_load(caplog):
    check_active([(CUDA_EP, {}), CPU_EP], [CPU_EP], strict=False)
    assert "could not load CUDAExecutionProvider" in caplog.text


def _ort_gpu_python() -> str | None:
    """An interpreter with onnxruntime-gpu: this one, or the one MSLSEG_ORT_GPU_PYTHON names."""
    if importlib.util.find_spec("onnxruntime") is not None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            version("onnxruntime-gpu")
            return sys.executable
        except PackageNotFoundError:
            pass
    other = os.environ.get("MSLSEG_ORT_GPU_PYTHON")
    return other if other and Path(other).exists() else None


def test_infer_on_cuda_without_a_usable_gpu_exits_1_instead_of_running_on_the_cpu(tmp_path):
    """onnxruntime-gpu lists CUDAExecutionProvider even where no GPU or CUDA library is: the session
    would fall back to the CPU. Runs where onnxruntime-gpu is importable (here, or in the venv
    MSLSEG_ORT_GPU_PYTHON names: python -m venv /tmp/ortgpu; pip install onnxruntime-gpu ...; pip
    install --no-deps -e .), and is skipped where a GPU really works."""
    python = _ort_gpu_python()
    if python is None:
        pytest.skip("onnxruntime-gpu is not installed (set MSLSEG_ORT_GPU_PYTHON to a venv that has it)")
    probe = subprocess.run([python, "-c", "import onnxruntime as o; print(o.get_available_providers())"],
                           capture_output=True, text=True, check=True).stdout
    assert CUDA_EP in probe
    model = _labels_model(tmp_path / "m.onnx", ["n", "h", "w", 3])
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), np.zeros((32, 64, 3), np.uint8))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([python, "-m", "mslseg", "infer", str(frames), "-m", str(model), "--device", "cuda",
                          "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    if out.returncode == 0:
        pytest.skip("CUDAExecutionProvider loaded: a working GPU, nothing to refuse")
    assert out.returncode == 1, out.stderr
    # ONNX Runtime's own C++ log (an error and a warning line) and the preload's messages stay quiet:
    # mslseg's error is the one line
    lines = _stderr_lines(out.stderr)
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ONNX Runtime could not load CUDAExecutionProvider"), out.stderr
    assert "would run on CPUExecutionProvider" in lines[0] and "mslseg[gpu]" in lines[0]
    assert not (tmp_path / "out").exists()
    # --verbose: the details (ONNX Runtime's reasons, mslseg's DEBUG log) come back, the error stays last
    loud = subprocess.run([python, "-m", "mslseg", "infer", str(frames), "-m", str(model), "--device", "cuda",
                           "-o", str(tmp_path / "out"), "--verbose"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert loud.returncode == 1 and len(_stderr_lines(loud.stderr)) > 1, loud.stderr
    assert _stderr_lines(loud.stderr)[-1] == lines[0]
