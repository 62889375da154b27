"""PyTorch backend for mslseg checkpoints (.pt): the reference path, and the baseline of `mslseg bench`.

The only runtime module that touches torch or mslseg outside the runtime, and only inside its
functions, so `import mslseg.runtime` stays torch-free. The argmax (and the softmax for a
confidence map) run in torch, on the model's device, like the baked-in argmax of an export.
Eval-mode forward passes share no mutable state, so several threads may call `infer` at once;
with CUDA graphs (one set of static buffers per shape) the calls run one after another.

`adapt` (online adaptation, mslseg.training.online) makes every call a step of the stream: the
model learns from the frames as it segments them, so calls run one after another (a lock) and
in fp32; `save_adapted` writes a snapshot, an ordinary checkpoint whose `online` entry lets
`adapt_from` continue where it stopped.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.backends.base import check_graph_input, parse_device
from mslseg.runtime.errors import InputError, MissingDependencyError, require
from mslseg.runtime.metadata import graph_label_dtype
from mslseg.runtime.sizes import Size

# torch documents one capture at a time per process (its allocator and torch.cuda.graph's set-up
# assume it): backends in several threads capture one after another
_CAPTURE_LOCK = threading.Lock()


def capture_options(graph_api: Callable[..., Any], stream: Any) -> dict[str, Any]:
    """Keywords for `torch.cuda.graph`: the backend's own side `stream`, and thread-local capture
    errors where this torch takes them ("global", the default, lets another thread's cudaMalloc or
    synchronisation during the capture break it; "thread_local" only this thread's)."""
    options = {"stream": stream}
    if "capture_error_mode" in inspect.signature(graph_api).parameters:
        options["capture_error_mode"] = "thread_local"
    return options


class TorchBackend:
    name = "torch"
    fixed_batch = None
    fixed_size = None
    max_batch = None
    input_dtype = np.dtype(np.float32)

    def __init__(self, path: Path, *, device: str = "auto", confidence: bool = False,
                 bf16: bool = False, channels_last: bool = False, fp16: bool = False,
                 cuda_graphs: bool = False, factory: str | None = None, adapt: Any = None,
                 adapt_from: str | Path | None = None) -> None:
        torch = require("torch", "train", "Running a .pt checkpoint")
        from mslseg.checkpoint import load_model

        kind, index = parse_device(device)
        if kind == "tensorrt":
            raise InputError("a .pt checkpoint runs on cpu or cuda; export it to run it with TensorRT")
        if kind == "cuda" and not torch.cuda.is_available():
            raise MissingDependencyError("device cuda was asked for, but this torch build sees no CUDA GPU; "
                                         "use --device cpu")
        use_cuda = kind == "cuda" or (kind == "auto" and torch.cuda.is_available())
        self._device = torch.device(f"cuda:{index}" if use_cuda else "cpu")
        self.device = str(self._device)
        model, meta = load_model(path, device=self._device, factory=factory)
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._model = model.to(memory_format=self._memory_format)
        if (fp16 or cuda_graphs) and self._device.type != "cuda":
            raise InputError("fp16 weights and CUDA graphs need a CUDA device; use bf16 on the CPU")
        if fp16:
            self._model = self._model.half()
        self._bf16 = bf16
        self._fp16 = fp16
        self._graphs: dict[tuple[int, ...], Any] | None = {} if cuda_graphs else None
        self._graph_lock = threading.Lock()
        # this backend's own capture stream, on its GPU: torch.cuda.graph's default one is shared
        # by the process and lives on whichever GPU was current at the first capture
        self._side = torch.cuda.Stream(self._device) if cuda_graphs else None
        self._torch = torch
        self._label_dtype = getattr(torch, graph_label_dtype(meta.num_classes).name)  # as an exported graph's
        self.meta = meta.with_(input_kind="float", output_kind="labels", confidence=confidence,
                               precision="fp32")
        self._checkpoint_meta, self._path = meta, Path(path)
        self._adapter, self._adapt_lock = None, threading.Lock()
        if adapt is not None:
            self._start_adapting(adapt, adapt_from, bf16=bf16, fp16=fp16, cuda_graphs=cuda_graphs)
        elif adapt_from is not None:
            raise InputError("adapt_from continues online adaptation: give adapt too")

    def _start_adapting(self, adapt: Any, adapt_from: str | Path | None, **speedups: bool) -> None:
        from mslseg.checkpoint import load_checkpoint
        from mslseg.training.online import OnlineAdapter, online_config

        used = [name for name, on in speedups.items() if on]
        if used:
            raise InputError(f"online adaptation runs in fp32 with gradients; drop {', '.join(used)}")
        try:
            cfg = online_config(adapt)
            self._adapter = OnlineAdapter(self._model, cfg)
            self._adapter.class_names = tuple(self._checkpoint_meta.class_names)
        except ValueError as exc:
            raise InputError(f"adapt: {exc}") from None
        if adapt_from is not None:
            data = load_checkpoint(adapt_from)
            state = data.get("online")
            if not isinstance(state, dict):
                raise InputError(f"{adapt_from} is no snapshot of online adaptation (it has no online state); "
                                 "give the adapted.pt an adapting run wrote")
            if state.get("started_from_sha256") not in (None, self._model_sha256()):
                raise InputError(f"{adapt_from} was adapted from another model than {self._path.name} "
                                 f"({state.get('started_from')}); continue with that model, or start afresh")
            try:
                self._adapter.load_state(state)
            except (ValueError, RuntimeError, KeyError) as exc:
                raise InputError(f"cannot continue from {adapt_from}: {str(exc).splitlines()[0]}; continue with "
                                 "the settings it was written with, or start afresh") from None

    def _model_sha256(self) -> str:
        """The starting model file's SHA-256, hashed once (a snapshot records what it adapted from)."""
        if getattr(self, "_sha256", None) is None:
            from mslseg.checkpoint import file_sha256

            self._sha256 = file_sha256(self._path)
        return self._sha256

    @property
    def adapter(self) -> Any:
        """The OnlineAdapter (None without `adapt`): its `stats` say what it did."""
        return self._adapter

    def save_adapted(self, path: str | Path) -> Path:
        """The adapted network as an ordinary checkpoint (atomic), with the state to continue from."""
        from mslseg.checkpoint import save_checkpoint

        if self._adapter is None:
            raise InputError("save_adapted needs a backend that adapts (adapt=...)")
        with self._adapt_lock:
            state = self._adapter.state() | {"started_from": str(self._path)}
            return save_checkpoint(path, self._adapter.deployed, self._checkpoint_meta,
                                   online=state | {"started_from_sha256": self._model_sha256()})

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # x: (N, 3, H, W) float32 normalised -> labels (N, H, W), confidence (N, H, W) or None
        check_graph_input(self, x)
        torch = self._torch
        if self._adapter is not None:  # a step of the stream: one call at a time, with gradients
            with self._adapt_lock:
                t = torch.from_numpy(x).to(self._device, non_blocking=True)
                logits = self._adapter(t.to(memory_format=self._memory_format)).float()
                labels, conf = self._labels(logits)
                return labels.cpu().numpy(), (conf.cpu().numpy() if conf is not None else None)
        with torch.inference_mode():
            if self._graphs is not None:
                # the whole call under the lock: the static input, the replay and the static outputs
                # are shared, and no other call of this backend may use the GPU during a capture
                with self._graph_lock, torch.cuda.device(self._device):
                    return self._replay(x)
            t = torch.from_numpy(x).to(self._device, non_blocking=True)
            labels, conf = self._forward(t)
            return labels.cpu().numpy(), (conf.cpu().numpy() if conf is not None else None)

    def _forward(self, t: Any) -> tuple[Any, Any]:
        torch = self._torch
        t = t.to(memory_format=self._memory_format, dtype=torch.float16 if self._fp16 else torch.float32)
        with torch.autocast(self._device.type, torch.bfloat16, enabled=self._bf16):
            logits = self._model(t).float()
        return self._labels(logits)

    def _labels(self, logits: Any) -> tuple[Any, Any]:
        torch = self._torch
        if self.meta.confidence:
            conf, labels = torch.softmax(logits, dim=1).max(dim=1)
        else:
            conf, labels = None, logits.argmax(dim=1)
        return labels.to(self._label_dtype), conf

    def _replay(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """CUDA-graph capture on the first call of each input shape, replay afterwards.

        Call with the lock held and the model's GPU current (`torch.cuda.device`): the static
        buffers, the capture and the replay all belong to it; on `cuda:N` with another GPU current,
        a capture records nothing and every replay returns the first call's labels.
        """
        torch = self._torch
        entry = self._graphs.get(x.shape)
        if entry is None:
            entry = self._graphs[x.shape] = self._capture(x.shape)
        graph, static_in, (labels, conf) = entry
        static_in.copy_(torch.from_numpy(x))  # host to device, straight into the graph's input
        graph.replay()
        return labels.cpu().numpy(), (conf.cpu().numpy() if conf is not None else None)

    def _capture(self, shape: tuple[int, ...]) -> tuple[Any, Any, tuple[Any, Any]]:
        """(graph, static input, static outputs) for inputs of `shape`; call as `_replay` says."""
        torch = self._torch
        static_in = torch.zeros(shape, device=self._device)
        side, main = self._side, torch.cuda.current_stream(self._device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph (cudnn autotuning, allocator)
                self._forward(static_in)
        main.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with _CAPTURE_LOCK, torch.cuda.graph(graph, **capture_options(torch.cuda.graph, side)):
            static_out = self._forward(static_in)
        return graph, static_in, static_out

    def close(self) -> None:
        self._model = None


def checkpoint_gflops(path: Path, size: Size, *, factory: str | None = None) -> float:
    """GFLOPs (2 x multiply-adds, 1e9) of one frame of `size` through a checkpoint's network.

    Counted by `torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products, like
    mslseg.runtime.bench.flops counts an ONNX graph) on the meta device: shapes only, no arithmetic, so
    ResNet-101 at 1024x512 counts in about a second. A network that cannot run on meta tensors
    (one that reads values in its forward) is counted by a real forward pass on the CPU.
    """
    torch = require("torch", "train", "Counting a .pt checkpoint's FLOPs")
    from torch.utils.flop_counter import FlopCounterMode

    from mslseg.checkpoint import load_model

    def count(net: Any, device: str) -> float:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 3, *size.hw, device=device))
        return counter.get_total_flops() / 1e9

    model, _ = load_model(path, factory=factory)
    try:
        return count(model.to("meta"), "meta")
    except (NotImplementedError, RuntimeError):
        return count(load_model(path, factory=factory)[0], "cpu")  # the meta move dropped the weights


def open_torch(path: Path, *, device: str = "auto", confidence: bool = False, bf16: bool = False,
               channels_last: bool = False, fp16: bool = False, cuda_graphs: bool = False,
               factory: str | None = None, threads: int | None = None, adapt: Any = None,
               adapt_from: str | Path | None = None) -> TorchBackend:
    """`bf16` (autocast) and `channels_last` are the speed-ups a PyTorch user would try first; on a
    GPU, `fp16` weights and `cuda_graphs` (static shapes captured once, replayed) go further.
    `factory`: the python:MODULE:FUNCTION that built a checkpoint of the user's own network (a
    checkpoint never gets code imported on its own say-so). `threads`: torch.set_num_threads, which
    is process-wide (torch has one intra-op pool per process). `adapt`: online adaptation (an
    objective name, a dict of mslseg.training.online.OnlineConfig fields, or one), `adapt_from`: a
    snapshot (`save_adapted`) to continue from."""
    backend = TorchBackend(path, device=device or "auto", confidence=confidence, bf16=bf16,
                           channels_last=channels_last, fp16=fp16, cuda_graphs=cuda_graphs, factory=factory,
                           adapt=adapt, adapt_from=adapt_from)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return backend
