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

from mslseg.architectures import build_model_from_spec
from mslseg.models.base import SegModel
from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.io.atomic import atomic_path
from mslseg.runtime.metadata import ModelMeta

log = logging.getLogger(__name__)

FORMAT = "mslseg-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model: SegModel, meta: ModelMeta, *,
                    training: dict[str, Any] | None = None, online: dict[str, Any] | None = None) -> Path:
    """Write `model` and `meta` (and a resumable training state, or an online adaptation's state)
    atomically to `path`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ModelFormatError(f"cannot write {path}: folder {path.parent} does not exist")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "spec": model.spec_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta.to_dict(),
        "training": training,
        **({"online": online} if online is not None else {}),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(payload, f)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write as "unexpected pos"; with a Python file
            # object the OSError (full disk, file-size limit) is its context: atomic_path names it
            cause = exc.__context__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, cause.strerror, str(tmp)) from exc
            raise
    return path


# torch.save writes a zip archive (or, before PyTorch 1.6, a pickle): such bytes are a checkpoint
# whatever the file is called
_TORCH_HEADERS = (b"PK\x03\x04", b"\x80")
_ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def exported_kind(path: str | Path) -> str | None:
    """'an ONNX model' or 'a TensorRT engine' when `path` is an exported model rather than a checkpoint
    (its bytes, or its name where its bytes are no checkpoint's); None otherwise. Reads 4 bytes."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_TORCH_HEADERS):
        return None
    # a ModelProto opens with ir_version (field 1, varint: tag 0x08) and a small number
    if path.suffix.lower() == ".onnx" or (len(head) > 1 and head[0] == 0x08 and head[1] < 0x80):
        return "an ONNX model"
    return "a TensorRT engine" if path.suffix.lower() in _ENGINE_SUFFIXES else None


def refuse_exported(path: str | Path, advice: str) -> None:
    """ModelFormatError when `path` is an exported model (exported_kind), with `advice` after it."""
    kind = exported_kind(path) if Path(path).is_file() else None
    if kind is not None:
        raise ModelFormatError(f"{path} is {kind}; {advice}")


def read_weights_file(path: str | Path) -> Any:
    """torch.load with weights_only=True and messages a user can act on; nothing is executed."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"checkpoint {path} does not exist; check the path")
    if path.stat().st_size == 0:
        raise ModelFormatError(f"checkpoint {path} is empty (0 bytes); it was not written fully")
    refuse_exported(path, "a .pt checkpoint is needed here (use the checkpoint it was exported from)")
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


def model_from_checkpoint(data: dict[str, Any], source: str = "checkpoint", *,
                          factory: str | None = None) -> tuple[SegModel, ModelMeta]:
    """The module and metadata of a loaded checkpoint. A model built by a Python factory is rebuilt only
    when `factory` names that same factory: a checkpoint never gets code imported on its own say-so."""
    # checkpoints from before the model registry hold DeepLab-v2 without saying so
    model = build_model_from_spec(data.get("arch", "deeplabv2"), data["spec"], factory=factory, source=source)
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(f"{source}: weights do not fit the model spec ({exc})") from None
    meta = ModelMeta.from_dict(data["meta"], source)
    return model, meta


def load_model(path: str | Path, *, device: str | torch.device = "cpu",
               factory: str | None = None) -> tuple[SegModel, ModelMeta]:
    """Load an mslseg checkpoint: the model in eval mode on `device`, and its metadata.

    `factory`: the `python:MODULE:FUNCTION` that built the checkpoint's model, for a model of your
    own (the checkpoint names it, but is not trusted to): the same code, named from any folder
    (`mslseg.models.factory.check_factory_allowed`)."""
    model, meta = model_from_checkpoint(load_checkpoint(path), str(path), factory=factory)
    return model.to(device).eval(), meta


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
