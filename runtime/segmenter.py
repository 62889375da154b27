"""`Segmenter`: frames in, label maps out, on any backend and any export variant.

By default every frame runs at the model's own size (the size it was trained and evaluated at,
`meta.train_size`), resized the way training resized images (`meta.interpolation`, bicubic by
default); labels come back resized (nearest neighbour) to each frame's resolution. `size=` picks
another size, `size="native"` runs each frame at its own size. Frames of different sizes in one
call are grouped by the size they run at, each group in batches of `batch_size`; a model with a
static input size runs at that size; a static batch is filled up with blank frames whose outputs
are dropped.

Thread safety: one Segmenter may be called from several threads at once. The host steps keep no
state; ONNX Runtime and torch run concurrent calls as they are; the TensorRT backend serialises
them with a lock around its one execution context. `close()` waits for calls in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mslseg.runtime.backends.base import Backend, check_backend_options, open_backend
from mslseg.runtime.backends.base import backend_options as options_of
from mslseg.runtime.errors import BackendError, InputError, ModelFormatError
from mslseg.runtime.host_ops import as_frames, to_graph_input, to_labels
from mslseg.runtime.metadata import ModelMeta, RunSize, resolve_run_size
from mslseg.runtime.sizes import Size, parse_run_size, resize_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timings:
    """This frame's share of its batch's time, in milliseconds (batch time / frames in the batch)."""

    pre_ms: float  # host preprocessing: resize, stack, channel order, normalisation
    infer_ms: float  # the backend's run, copies to and from the device included
    post_ms: float  # argmax / confidence on the host where the graph has none, resize back
    batch: int  # how many frames shared the batch

    @property
    def total_ms(self) -> float:
        return self.pre_ms + self.infer_ms + self.post_ms


@dataclass(frozen=True)
class Segmentation:
    """The result for one frame."""

    labels: np.ndarray  # (H, W) uint8, uint16 past 255 classes, at the frame's resolution
    confidence: np.ndarray | None  # (H, W) float32 max class probability, or None
    timings: Timings

    def class_fractions(self, num_classes: int) -> np.ndarray:
        """(num_classes,) float64: the fraction of the frame's pixels given to each class."""
        counts = np.bincount(self.labels.ravel(), minlength=num_classes)[:num_classes]
        return counts / max(self.labels.size, 1)


class Segmenter:
    """Run a segmentation model (.onnx, .engine/.plan, .pt) on uint8 frames.

    device: "auto" (best available), "cpu", "cuda[:N]", "tensorrt[:N]" (ONNX Runtime's TensorRT EP).
    batch_size: frames per model run (a static-batch model uses its own).
    providers: ONNX Runtime provider list, instead of device (.onnx only).
    confidence: None: whatever the graph gives; True: always (computed on the host from logits or
        probabilities when the graph has no confidence output); False: never.
    size: the size frames run at: None (default): the model's own (`meta.train_size`; a model
        without one runs frames at their own size); a Size or "WIDTHxHEIGHT"; "native": each
        frame at its own size. `run_size` and `describe_size()` say what was chosen.
    threads: CPU threads: ONNX Runtime's intra-op pool (None: one per physical core), or
        torch.set_num_threads for a .pt (process-wide); an engine does not take it.
    warmup: run one batch at construction; True uses the run size, the engine's profile size, or
        64x64; a Size or "WIDTHxHEIGHT" warms up at that size (first runs at a new size are slow on
        some EPs).
    cache_dir: engine and timing caches of ONNX Runtime's TensorRT EP (.onnx only).
    backend_options: what only one backend takes (.onnx: spin, trt_max_batch, trt_max_size; .pt:
        bf16, channels_last, fp16, cuda_graphs, factory, adapt, adapt_from).
        `adapt` (.pt): online adaptation while segmenting: an objective ("msl", "iw-msl",
        "entropy", "none": batch statistics only) or a dict of mslseg.training.online.OnlineConfig
        fields ({"objective": "msl", "every": 4}); calls then run one after another, no warm-up
        batch is run (it would adapt to a blank frame), `adaptation` says what it did and
        `save_adapted(path)` writes the adapted network as an ordinary checkpoint that
        `adapt_from=path` continues from. See docs/online.md. Only options given are passed on; one the
        model's backend does not take (threads for an engine, cache_dir for a .pt) is an InputError
        naming the backends that take it. trt_max_batch / trt_max_size bound the TensorRT EP's profile (what TensorRT reserves
        memory for); by default they are batch_size and the run size (twice the training size for
        size="native"), see docs/runtime.md.
    """

    def __init__(self, path: str | Path, device: str = "auto", batch_size: int = 1,
                 providers: list[Any] | None = None, *, confidence: bool | None = None,
                 size: Size | str | None = None, threads: int | None = None,
                 warmup: bool | Size | str = True, cache_dir: str | Path | None = None,
                 **backend_options: Any) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        requested = parse_run_size(size, "size")
        warm_size = warmup if isinstance(warmup, bool) else Size.of(warmup, "warmup")
        self.path = Path(path)
        given = {"providers": providers, "threads": threads, "cache_dir": cache_dir}
        backend_options.update({k: v for k, v in given.items() if v is not None})
        check_backend_options(self.path, backend_options)
        takes = options_of(self.path)
        if "confidence" in takes:  # a .pt computes it in torch; a graph has a confidence output or not
            backend_options["confidence"] = bool(confidence)
        if "trt_max_batch" in takes:  # the TensorRT EP's profile: as large as the runs, no larger
            backend_options.setdefault("trt_max_batch", int(batch_size))
            backend_options.setdefault("trt_max_size", requested)
        self._state = threading.Condition()
        self._in_flight = 0
        self._backend: Backend | None = open_backend(
            self.path, device=device, **backend_options)
        backend = self._backend
        self.meta: ModelMeta = backend.meta
        self.backend_name, self.device = backend.name, backend.device
        self.batch_size = backend.fixed_batch or min(int(batch_size), backend.max_batch or int(batch_size))
        self._resolved = self._choose_size(requested, backend)
        self.run_size = self._resolved.size
        graph_conf = backend.meta.confidence or backend.meta.output_kind != "labels"
        if confidence and not graph_conf:
            self.close()
            raise ModelFormatError(f"{self.path} outputs labels only, so no confidence can be computed; "
                                   "re-export it with a confidence output, or leave confidence off")
        self._want_conf = backend.meta.confidence if confidence is None else bool(confidence)
        if warmup and getattr(backend, "adapter", None) is None:  # an adapting model learns from every batch
            # an engine's optimisation profile may not include 64x64: its opt shape is a safe default
            opt = getattr(backend, "opt_size", None)
            default = self.run_size or (Size.from_hw(opt) if opt else Size(64, 64))
            h, w = (default if isinstance(warm_size, bool) else warm_size).hw
            try:
                self.segment([np.zeros((h, w, 3), np.uint8)] * self.batch_size)
            except BaseException:
                self.close()
                raise

    def _choose_size(self, requested: Size | str | None, backend: Backend) -> RunSize:
        """The size frames run at (None: their own), by the one rule in `resolve_run_size`."""
        fixed = Size.from_hw(backend.fixed_size) if backend.fixed_size else None
        try:
            return resolve_run_size(requested, backend.meta, fixed, self.path.name)
        except InputError:
            self.close()
            raise

    def describe_size(self) -> str:
        """'128x64 (the model's training size, bicubic)' or 'native (each frame's own size, ...)'."""
        return str(self._resolved)

    @property
    def num_classes(self) -> int:
        return self.meta.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.meta.class_names

    def __call__(self, frames: Any, rgb: bool = False) -> Segmentation | list[Segmentation]:
        """One HxWx3 frame -> one Segmentation; a batch (list or (N,H,W,3) array) -> a list.

        Frames are BGR (as OpenCV reads them) unless rgb=True.
        """
        checked, single = as_frames(frames)
        results = self._segment(checked, rgb)
        return results[0] if single else results

    def segment(self, frames: Any, rgb: bool = False) -> list[Segmentation]:
        """Like calling the Segmenter, but always a list (one frame gives a list of one)."""
        return self._segment(as_frames(frames)[0], rgb)

    def _segment(self, frames: list[np.ndarray], rgb: bool) -> list[Segmentation]:
        with self._state:
            if self._backend is None:
                raise BackendError(f"the segmenter for {self.path.name} is closed; create a new one")
            self._in_flight += 1
        try:
            order = "rgb" if rgb else "bgr"
            groups: dict[tuple[int, int], list[int]] = {}
            for i, f in enumerate(frames):
                groups.setdefault(self.run_size.hw if self.run_size else f.shape[:2], []).append(i)
            results: list[Segmentation | None] = [None] * len(frames)
            for size, indices in groups.items():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start:start + self.batch_size]
                    for i, res in zip(chunk, self._run([frames[i] for i in chunk], size, order), strict=True):
                        results[i] = res
            return results  # type: ignore[return-value]
        finally:
            with self._state:
                self._in_flight -= 1
                self._state.notify_all()

    def _run(self, frames: list[np.ndarray], size: tuple[int, int], order: str) -> list[Segmentation]:
        backend = self._backend
        t0 = time.perf_counter()
        h, w = size
        resized = [resize_frame(f, Size(w, h), self.meta.interpolation) for f in frames]
        x = to_graph_input(resized, self.meta, order, backend.input_dtype, backend.fixed_batch)
        t1 = time.perf_counter()
        out, conf = backend.infer(x)
        t2 = time.perf_counter()
        labels, confidence = to_labels(out[: len(frames)], None if conf is None else conf[: len(frames)],
                                       self.meta, self._want_conf)
        per_frame = []
        for i, f in enumerate(frames):
            lab, cf = labels[i], None if confidence is None else confidence[i]
            fh, fw = f.shape[:2]
            if (fh, fw) != (h, w):
                lab = cv2.resize(lab, (fw, fh), interpolation=cv2.INTER_NEAREST)
                cf = None if cf is None else cv2.resize(cf, (fw, fh), interpolation=cv2.INTER_LINEAR)
            per_frame.append((lab, cf))
        t3 = time.perf_counter()
        n = len(frames)
        timings = Timings((t1 - t0) * 1e3 / n, (t2 - t1) * 1e3 / n, (t3 - t2) * 1e3 / n, n)
        return [Segmentation(lab, cf, timings) for lab, cf in per_frame]

    @property
    def adaptation(self) -> Any:
        """Online adaptation's statistics (mslseg.training.online.OnlineStats: batches, updates,
        resets, ms per frame with and without an update), or None for a model that does not adapt."""
        adapter = getattr(self._backend, "adapter", None)
        return adapter.stats if adapter is not None else None

    def adaptation_settings(self) -> dict[str, Any] | None:
        """The OnlineConfig's fields of an adapting model, else None."""
        adapter = getattr(self._backend, "adapter", None)
        return dict(vars(adapter.cfg)) if adapter is not None else None

    def save_adapted(self, path: str | Path) -> Path:
        """Write the adapted network (atomically) as a checkpoint: `mslseg export` takes it, and
        `Segmenter(model, adapt=..., adapt_from=path)` continues adapting from it."""
        backend = self._backend
        if backend is None or getattr(backend, "adapter", None) is None:
            raise InputError(f"{self.path.name} does not adapt online: give adapt= to save an adapted model")
        return backend.save_adapted(path)

    def describe(self) -> str:
        """One line: model file, backend, device, precision, I/O variant, the size frames run at."""
        m = self.meta
        settings = self.adaptation_settings()
        adapting = (f", adapting online ({settings['objective']} on the {settings['params']} parameters, every "
                    f"{settings['every']} batch(es), lr {settings['lr']:g})" if settings else "")
        return (f"{self.path.name}: {self.backend_name} on {self.device}, {m.precision}, "
                f"{m.input_kind} in, {m.output_kind} out, {m.num_classes} classes, "
                f"frames run at {self.describe_size()}{adapting}")

    def close(self) -> None:
        """Release the model (waits for calls in flight); later calls raise BackendError."""
        with self._state:
            self._state.wait_for(lambda: self._in_flight == 0)
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
