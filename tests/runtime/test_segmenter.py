"""Segmenter on every export variant: same labels, any frame size, BGR/RGB, threads, lifecycle."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mslseg.runtime import Segmenter
from mslseg.runtime.errors import BackendError, InputError, ModelFormatError
from mslseg.runtime.sizes import Size
from tests.runtime import models


@pytest.fixture(scope="module")
def seg():
    with Segmenter(models.onnx_model("float_logits"), device="cpu", batch_size=2, threads=1) as s:
        yield s


def test_every_variant_gives_the_reference_labels(variant_path, reference_labels):
    with Segmenter(variant_path, device="cpu", batch_size=2, threads=1) as s:
        results = s(models.frames())
    assert len(results) == 3
    for res, ref in zip(results, reference_labels, strict=True):
        assert res.labels.shape == (48, 64) and res.labels.dtype == np.uint8
        assert (res.labels == ref).mean() > 0.99
        t = res.timings
        assert t.batch in (1, 2) and t.infer_ms > 0 and t.total_ms >= t.infer_ms
    has_conf = s.meta.confidence
    assert (results[0].confidence is not None) == has_conf


def test_torch_backend_matches_onnx(checkpoint_path, seg):
    frames = models.frames()
    with Segmenter(checkpoint_path, device="cpu") as torch_seg:
        assert torch_seg.backend_name == "torch"
        for a, b in zip(torch_seg(frames), seg(frames), strict=True):
            assert (a.labels == b.labels).mean() > 0.99


def test_single_frame_returns_one_result(seg):
    res = seg(models.frames(1)[0])
    assert res.labels.shape == (48, 64)


def test_mixed_sizes_in_one_batch_come_back_at_their_own_size(seg):
    big, small, odd = (models.frames(1, size)[0] for size in [(64, 96), (32, 48), (33, 47)])
    results = seg([big, small, odd, big])
    assert [r.labels.shape for r in results] == [(64, 96), (32, 48), (33, 47), (64, 96)]
    assert np.array_equal(results[0].labels, results[3].labels)
    assert np.array_equal(seg(small).labels, results[1].labels)  # grouping does not change results


def test_rgb_flag_flips_channels(seg):
    bgr = models.frames(2)
    rgb = [np.ascontiguousarray(f[..., ::-1]) for f in bgr]
    for a, b in zip(seg(bgr), seg(rgb, rgb=True), strict=True):
        assert np.array_equal(a.labels, b.labels)
    differs = [not np.array_equal(a.labels, b.labels) for a, b in zip(seg(bgr), seg(rgb), strict=True)]
    assert any(differs)


def test_rgb_model_takes_bgr_frames_by_default(reference_labels):
    with Segmenter(models.onnx_model("uint8_rgb_labels_conf"), device="cpu", threads=1) as s:
        assert s.meta.input_order == "rgb"
        labels = np.stack([r.labels for r in s(models.frames())])
    assert (labels == reference_labels).mean() > 0.99


def test_static_model_resizes_and_resizes_back():
    with Segmenter(models.onnx_model("static_float_logits"), device="cpu", threads=1) as s:
        assert (s.batch_size, s.run_size) == (2, Size(64, 48))
        results = s(models.frames(3, (96, 128)))  # three frames: one full batch, one padded
    assert [r.labels.shape for r in results] == [(96, 128)] * 3


def test_size_option_runs_at_a_common_size(seg):
    path = models.onnx_model("uint8_labels")
    with Segmenter(path, device="cpu", threads=1, size="32x32", batch_size=2) as s:
        results = s([models.frames(1, (64, 96))[0], models.frames(1, (40, 40))[0]])
        assert s.describe_size() == "32x32 (as asked, bicubic)"
    assert [r.labels.shape for r in results] == [(64, 96), (40, 40)]
    assert results[0].timings.batch == 2  # one group: both ran at 32x32 together


@pytest.mark.slow
def test_default_size_is_the_training_size_resized_as_in_training(tmp_path):
    """A frame of another size runs at meta.train_size, resized with meta.interpolation."""
    import cv2

    from mslseg.export import export_onnx
    from mslseg.runtime.onnx_reader import read_onnx_meta

    net, meta = models._net(), models.meta()
    for interp, flag in (("bicubic", cv2.INTER_CUBIC), ("bilinear", cv2.INTER_LINEAR)):
        path = export_onnx(net, meta.with_(train_size=Size(48, 32), interpolation=interp),
                           tmp_path / f"{interp}.onnx", input_kind="uint8", output_kind="labels", slim=False)
        assert read_onnx_meta(path).interpolation == interp
        frame = models.frames(1, (64, 96))[0]
        with Segmenter(path, device="cpu", threads=1) as s, \
                Segmenter(path, device="cpu", threads=1, size="native") as native:
            assert s.describe_size() == f"48x32 (the model's training size, {interp})"
            got = s(frame).labels
            small = native(cv2.resize(frame, (48, 32), interpolation=flag)).labels
            assert native.run_size is None and native.describe_size().startswith("native")
            assert native(frame).labels.shape == (64, 96)
        assert got.shape == (64, 96)
        assert np.array_equal(got, cv2.resize(small, (96, 64), interpolation=cv2.INTER_NEAREST))


def test_unknown_backend_options_are_errors():
    path = models.onnx_model("uint8_labels")
    with pytest.raises(InputError, match=r"thread is not an option of any backend; a \.onnx model .*threads"):
        Segmenter(path, thread=2)
    with pytest.raises(InputError, match=r"bf16 applies to \.pt models"):
        Segmenter(path, bf16=True)
    with Segmenter(path, device="cpu", threads=1, spin=False, warmup=False):
        pass
    engine = path.with_suffix(".engine")  # refused before it is read: no TensorRT needed
    with pytest.raises(InputError, match=r"^threads applies to \.onnx, \.pt models .*a \.engine model"):
        Segmenter(engine, threads=2)


def test_confidence_on_request():
    with Segmenter(models.onnx_model("float_logits"), device="cpu", threads=1, confidence=True) as s:
        conf = s(models.frames(1)[0]).confidence
    with Segmenter(models.onnx_model("float_probs_conf"), device="cpu", threads=1) as s:
        graph_conf = s(models.frames(1)[0]).confidence
    assert conf.dtype == np.float32 and conf.shape == (48, 64)
    assert np.allclose(conf, graph_conf, atol=1e-4)
    with pytest.raises(ModelFormatError, match="labels only"):
        Segmenter(models.onnx_model("uint8_labels"), device="cpu", confidence=True)


def test_four_threads_equal_serial(seg):
    frames = [models.frames(1, size, seed=i)[0] for i, size in enumerate([(48, 64), (32, 40)] * 4)]
    serial = [r.labels for r in seg(frames)]
    got: dict[int, list[np.ndarray]] = {}

    def work(k):
        got[k] = [seg(f).labels for _ in range(2) for f in frames[k::4]]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        for a, b in zip(got[k], serial[k::4] * 2, strict=True):
            assert np.array_equal(a, b)


def test_close_and_context_manager():
    s = Segmenter(models.onnx_model("uint8_labels"), device="cpu", threads=1, warmup=False)
    with s:
        s(models.frames(1)[0])
    with pytest.raises(BackendError, match="closed"):
        s(models.frames(1)[0])
    s.close()  # twice is fine


def test_bad_constructor_arguments():
    with pytest.raises(InputError, match="batch_size"):
        Segmenter(models.onnx_model("uint8_labels"), batch_size=0)
    with pytest.raises(InputError, match="size"):
        Segmenter(models.onnx_model("uint8_labels"), size="0x5")
    with pytest.raises(InputError, match="Size"):
        Segmenter(models.onnx_model("uint8_labels"), size=(48, 64))  # (h, w) or (w, h)? refused


@pytest.mark.parametrize("frames, match", [
    ([], "empty batch"),
    (np.zeros((0, 8, 8, 3), np.uint8), "empty batch"),
    (np.zeros((8, 8), np.uint8), "GRAY2BGR"),
    (np.zeros((8, 8, 4), np.uint8), "alpha"),
    (np.zeros((3, 8, 8), np.uint8), "channels-first"),
    (np.zeros((8, 8, 3), np.int64), "astype"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (np.full((8, 8, 3), 300.0), "pixel units"),
    ("frame.png", "numpy array"),
    ([np.zeros((8, 8, 3), np.uint8), None], "frame 1"),
])
def test_input_errors_say_what_to_do(seg, frames, match):
    with pytest.raises(InputError, match=match):
        seg(frames)


def test_float_frames_in_pixel_units_are_accepted(seg):
    f = models.frames(1)[0]
    assert np.array_equal(seg(f.astype(np.float32)).labels, seg(f).labels)


def test_model_without_metadata(tmp_path):
    import onnx

    proto = onnx.load(str(models.onnx_model("uint8_labels")))
    del proto.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelFormatError, match="no mslseg metadata"):
        Segmenter(path)


def test_junk_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff" * 100)
    with pytest.raises(ModelFormatError, match="not an ONNX model|no mslseg metadata"):
        Segmenter(path)


def test_two_onnxruntime_wheels_are_named(monkeypatch):
    import importlib.metadata

    from mslseg.runtime.backends import ort_backend

    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}

    monkeypatch.setattr(importlib.metadata, "distributions",
                        lambda: [Dist("onnxruntime"), Dist("onnxruntime-gpu"), Dist("numpy")])
    msg = ort_backend.onnxruntime_conflict()
    assert "onnxruntime, onnxruntime-gpu" in msg and "pip uninstall -y" in msg
    assert "pip install onnxruntime-gpu" in msg
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [Dist("onnxruntime")])
    assert ort_backend.onnxruntime_conflict() is None
