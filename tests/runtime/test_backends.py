"""Every backend checked the same way: `BackendContract` holds the checks, one thin class per backend."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mslseg.runtime.backends.base import Backend, open_backend
from mslseg.runtime.errors import InputError, ModelFormatError
from mslseg.runtime.host_ops import to_graph_input, to_labels
from tests.runtime import models


class BackendContract:
    """Subclasses provide `backend` (a fixture yielding an open Backend)."""

    def test_is_a_backend(self, backend):
        assert isinstance(backend, Backend)
        assert backend.name and backend.device
        assert backend.meta.num_classes == models.NUM_CLASSES
        assert backend.input_dtype in (np.float32, np.float16, np.uint8)

    def test_infer_shapes_and_dtypes(self, backend, reference_labels):
        n = backend.fixed_batch or 2
        h, w = backend.fixed_size or (48, 64)
        frames = models.frames(n, (h, w))
        out, conf = backend.infer(to_graph_input(frames, backend.meta, "bgr", backend.input_dtype))
        if backend.meta.output_kind == "labels":
            assert out.shape == (n, h, w) and out.dtype in (np.uint8, np.int32)
        else:
            assert out.shape == (n, models.NUM_CLASSES, h, w) and out.dtype in (np.float32, np.float16)
        if conf is not None:
            assert conf.shape == (n, h, w) and np.all((conf >= 0) & (conf <= 1.0001))
        labels, _ = to_labels(out, conf, backend.meta, False)
        if (h, w) == (48, 64):
            assert (labels == reference_labels[:n]).mean() > 0.99

    def test_rejects_wrong_input(self, backend):
        bad = np.zeros((1, 5, 5), np.float64)
        with pytest.raises(InputError, match="expects"):
            backend.infer(bad)


class TestOrtBackend(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, variant_path):
        b = open_backend(variant_path, device="cpu", threads=1)
        yield b
        b.close()

    def test_static_shape_is_reported(self):
        b = open_backend(models.onnx_model("static_float_logits"), device="cpu", threads=1)
        assert (b.fixed_batch, b.fixed_size) == (2, (48, 64))
        with pytest.raises(InputError, match="fixed batch"):
            b.infer(np.zeros((1, 3, 48, 64), np.float32))


class TestTorchBackend(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, checkpoint_path):
        pytest.importorskip("torch")
        b = open_backend(checkpoint_path, device="cpu", confidence=True)
        yield b
        b.close()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed")
@pytest.mark.gpu
class TestTrtBackend(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tmp_path_factory):
        from mslseg.export.trt_build import build_engine

        engine = build_engine(models.onnx_model("uint8_labels"), tmp_path_factory.mktemp("trt") / "m.engine")
        b = open_backend(engine, device="cuda")
        yield b
        b.close()


def test_unknown_suffix_lists_supported(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"x")
    with pytest.raises(ModelFormatError, match=r"unknown model kind.*\.onnx, \.engine, \.plan, \.pt"):
        open_backend(path)


def test_missing_model(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        open_backend(tmp_path / "nope.onnx")


def test_unknown_device():
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        open_backend(models.onnx_model("float_logits"), device="gpu")


def test_cuda_without_gpu_build_says_what_to_install():
    from mslseg.runtime.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r"mslseg\[gpu\]|--device cpu"):
        open_backend(models.onnx_model("float_logits"), device="cuda")


@pytest.mark.parametrize(("suffix", "option", "takers"), [
    (".engine", "threads", ".onnx, .pt"), (".plan", "cache_dir", ".onnx"), (".pt", "cache_dir", ".onnx"),
    (".pt", "providers", ".onnx"), (".onnx", "bf16", ".pt"), (".engine", "confidence", ".pt"),
])
def test_an_option_the_backend_does_not_take_names_the_backends_that_do(tmp_path, suffix, option, takers):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"x")  # never opened: the option is refused first
    with pytest.raises(InputError, match=rf"^{option} applies to {takers} models \(.+\); a \{suffix} model "
                                         "does not take it"):
        open_backend(path, **{option: 1})


def test_every_factory_option_is_described_and_taken():
    """The factories' signatures own the options; OPTION_HELP must describe exactly those."""
    from mslseg.runtime.backends.base import BACKENDS, OPTION_HELP, backend_options

    taken = {o for s in BACKENDS for o in backend_options("m" + s)}
    assert taken == set(OPTION_HELP)
    assert backend_options("m.engine") == ("device",)


def test_torch_threads_are_used_not_dropped(checkpoint_path):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        b = open_backend(checkpoint_path, device="cpu", threads=1)
        assert b.name == "torch" and torch.get_num_threads() == 1
        b.close()
    finally:
        torch.set_num_threads(before)
