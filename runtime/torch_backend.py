"""PyTorch backend for mslseg checkpoints (.pt): the reference path, and the baseline of `mslseg bench`.

The only runtime module that touches torch or mslseg outside the runtime, and only inside its
functions, so `import mslseg.runtime` stays torch-free. The argmax (and the softmax for a
confidence map) run in torch, on the model's device, like the baked-in argmax of an export.
Eval-mode forward passes share no mutable state, so several threads may call `infer` at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.backend import check_graph_input, parse_device
from mslseg.runtime.errors import InputError, MissingDependencyError, require


class TorchBackend:
    name = "torch"
    fixed_batch = None
    fixed_size = None
    max_batch = None
    input_dtype = np.dtype(np.float32)

    def __init__(self, path: Path, *, device: str = "auto", confidence: bool = False,
                 bf16: bool = False, channels_last: bool = False) -> None:
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
        model, meta = load_model(path, device=self._device)
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._model = model.to(memory_format=self._memory_format)
        self._bf16 = bf16
        self._torch = torch
        self._label_dtype = torch.uint8 if meta.num_classes <= 256 else torch.int32
        self.meta = meta.with_(input_kind="float", output_kind="labels", confidence=confidence,
                               precision="fp32")

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # x: (N, 3, H, W) float32 normalised -> labels (N, H, W), confidence (N, H, W) or None
        check_graph_input(self, x)
        torch = self._torch
        with torch.inference_mode(), torch.autocast(self._device.type, torch.bfloat16, enabled=self._bf16):
            t = torch.from_numpy(x).to(self._device, memory_format=self._memory_format)
            logits = self._model(t).float()
            if self.meta.confidence:
                conf, labels = torch.softmax(logits, dim=1).max(dim=1)
            else:
                conf, labels = None, logits.argmax(dim=1)
            labels = labels.to(self._label_dtype).cpu().numpy()
            return labels, (conf.cpu().numpy() if conf is not None else None)

    def close(self) -> None:
        self._model = None


def open_torch(path: Path, *, device: str = "auto", confidence: bool = False, bf16: bool = False,
               channels_last: bool = False, providers: Any = None, **_: Any) -> TorchBackend:
    """`bf16` (autocast) and `channels_last` are the speed-ups a PyTorch user would try first."""
    if providers:
        raise InputError("providers apply to .onnx models only; pass device for a .pt")
    return TorchBackend(path, device=device or "auto", confidence=confidence, bf16=bf16,
                        channels_last=channels_last)
