"""mslseg's own checkpoint format: a dict of tensors and plain types, never a pickled object.

Loadable with `torch.load(weights_only=True)`: format marker, model spec, state dict, model
metadata (class names, palette, normalisation) and, for resumable runs, the training state.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from mslseg.models.deeplabv2 import DeepLabV2, ModelSpec
from mslseg.runtime.atomic import atomic_path
from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ModelMeta

log = logging.getLogger(__name__)

FORMAT = "mslseg-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model: DeepLabV2, meta: ModelMeta, *,
                    training: dict[str, Any] | None = None) -> Path:
    """Write `model` and `meta` (and a resumable training state) atomically to `path`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ModelFormatError(f"cannot write {path}: folder {path.parent} does not exist")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta.to_dict(),
        "training": training,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_weights_file(path: str | Path) -> Any:
    """torch.load with weights_only=True and messages a user can act on; nothing is executed."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"checkpoint {path} does not exist; check the path")
    if path.stat().st_size == 0:
        raise ModelFormatError(f"checkpoint {path} is empty (0 bytes); it was not written fully")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:120]
        if "global" in detail.lower():
            raise ModelFormatError(
                f"refused to load {path}: it holds Python objects beyond tensors and plain types, "
                f"which could run code ({detail}); save a plain state dict where it was made"
            ) from None
        raise ModelFormatError(
            f"{path} is not a checkpoint of tensors and plain types ({detail}); check the path"
        ) from None
    except Exception as exc:  # arbitrary bytes raise arbitrary errors in the unpickler
        raise ModelFormatError(
            f"{path} is not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]}); "
            "check the path"
        ) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an mslseg checkpoint as a plain dict (see the module docstring for its keys)."""
    data = read_weights_file(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFormatError(
            f"{path} is not an mslseg checkpoint; for foreign weights (MaxSquareLoss, DeepLab "
            "ImageNet init, torchvision ResNet) run 'mslseg convert SRC DST --from FORMAT' first"
        )
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFormatError(f"{path} was written by a newer mslseg; upgrade mslseg")
    return data


def model_from_checkpoint(data: dict[str, Any], source: str = "checkpoint") -> tuple[DeepLabV2, ModelMeta]:
    spec = ModelSpec.from_dict(data["spec"])
    model = DeepLabV2(spec)
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(f"{source}: weights do not fit the model spec ({exc})") from None
    meta = ModelMeta.from_dict(data["meta"], source)
    return model, meta


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[DeepLabV2, ModelMeta]:
    """Load an mslseg checkpoint: the model in eval mode on `device`, and its metadata."""
    model, meta = model_from_checkpoint(load_checkpoint(path), str(path))
    return model.to(device).eval(), meta


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
