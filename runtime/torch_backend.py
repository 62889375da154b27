"""PyTorch backend for mslseg checkpoints (.pt): the reference path, and the baseline of `mslseg bench`.

The only runtime module that touches torch or mslseg outside the runtime, and only inside its
functions, so `import mslseg.runtime` stays torch-free. The argmax (and the softmax for a
confidence map) run in torch, on the model's device, like the baked-in argmax of an export.
Eval-mode forward passes share no mutable state, so several threads may call `infer` at once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.backend import check_graph_input, parse_device
from mslseg.runtime.errors import InputError, MissingDependencyError, require
from mslseg.runtime.sizes import Size


class TorchBackend:
    name = "torch"
    fixed_batch = None
    fixed_size = None
    max_batch = None
    input_dtype = np.dtype(np.float32)

    def __init__(self, path: Path, *, device: str = "auto", confidence: bool = False,
                 bf16: bool = False, channels_last: bool = False, fp16: bool = False,
                 cuda_graphs: bool = False, factory: str | None = None) -> None:
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
        self._torch = torch
        self._label_dtype = torch.uint8 if meta.num_classes <= 256 else torch.int32
        self.meta = meta.with_(input_kind="float", output_kind="labels", confidence=confidence,
                               precision="fp32")

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # x: (N, 3, H, W) float32 normalised -> labels (N, H, W), confidence (N, H, W) or None
        check_graph_input(self, x)
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self._device, non_blocking=True)
            if self._graphs is not None:
                with self._graph_lock:  # one set of static buffers per shape
                    labels, conf = self._replay(t)
                    labels, conf = labels.cpu().numpy(), (conf.cpu().numpy() if conf is not None else None)
                return labels, conf
            labels, conf = self._forward(t)
            return labels.cpu().numpy(), (conf.cpu().numpy() if conf is not None else None)

    def _forward(self, t: Any) -> tuple[Any, Any]:
        torch = self._torch
        t = t.to(memory_format=self._memory_format, dtype=torch.float16 if self._fp16 else torch.float32)
        with torch.autocast(self._device.type, torch.bfloat16, enabled=self._bf16):
            logits = self._model(t).float()
        if self.meta.confidence:
            conf, labels = torch.softmax(logits, dim=1).max(dim=1)
        else:
            conf, labels = None, logits.argmax(dim=1)
        return labels.to(self._label_dtype), conf

    def _replay(self, t: Any) -> tuple[Any, Any]:
        """CUDA-graph capture on the first call of each input shape, replay afterwards.

        Everything a graph touches happens with the model's GPU as the current device: the side
        stream, the static buffers, the capture and the replay. `torch.cuda.stream`/`graph` use
        the current device's streams, so on `cuda:N` with another GPU current a capture outside
        `torch.cuda.device(N)` records nothing and every replay returns the first call's labels.
        """
        torch = self._torch
        with torch.cuda.device(self._device):
            entry = self._graphs.get(tuple(t.shape))
            if entry is None:
                entry = self._graphs[tuple(t.shape)] = self._capture(t)
            graph, static_in, (labels, conf) = entry
            static_in.copy_(t)
            graph.replay()
            return labels.clone(), (conf.clone() if conf is not None else None)

    def _capture(self, t: Any) -> tuple[Any, Any, tuple[Any, Any]]:
        """(graph, static input, static outputs) for inputs shaped like `t`; call under torch.cuda.device."""
        torch = self._torch
        static_in = t.clone()
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph (cudnn autotuning, allocator)
                self._forward(static_in)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        return graph, static_in, static_out

    def close(self) -> None:
        self._model = None


def checkpoint_gflops(path: Path, size: Size, *, factory: str | None = None) -> float:
    """GFLOPs (2 x multiply-adds, 1e9) of one frame of `size` through a checkpoint's network.

    Counted by `torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products, like
    mslseg.runtime.flops counts an ONNX graph) on the meta device: shapes only, no arithmetic, so
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
               factory: str | None = None, providers: Any = None, **_: Any) -> TorchBackend:
    """`bf16` (autocast) and `channels_last` are the speed-ups a PyTorch user would try first; on a
    GPU, `fp16` weights and `cuda_graphs` (static shapes captured once, replayed) go further.
    `factory`: the python:MODULE:FUNCTION that built a checkpoint of the user's own network (a
    checkpoint never gets code imported on its own say-so)."""
    if providers:
        raise InputError("providers apply to .onnx models only; pass device for a .pt")
    return TorchBackend(path, device=device or "auto", confidence=confidence, bf16=bf16,
                        channels_last=channels_last, fp16=fp16, cuda_graphs=cuda_graphs, factory=factory)
