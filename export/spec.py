"""ExportSpec: what an export of a checkpoint makes, checked once, when it is created.

`mslseg export` builds one from its options and `export_checkpoint` takes it; the Python API
`export_checkpoint(checkpoint, out, **options)` builds one from its keywords. Either way the same
checks run once, before anything is loaded or written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mslseg.runtime.errors import InputError
from mslseg.runtime.sizes import Size

if TYPE_CHECKING:
    from mslseg.export.trt_profile import EngineOptions


@dataclass(frozen=True)
class ExportSpec:
    """An export's options; invalid ones raise InputError on creation (see `__post_init__`)."""

    input_kind: str = "float"  # float: (N,3,H,W) normalised; uint8: (N,H,W,3) raw frames
    input_order: str = "bgr"  # the colour order of uint8 frames: bgr (OpenCV) or rgb
    output_kind: str = "logits"  # logits, probs (softmax in the graph) or labels (argmax in the graph)
    confidence: bool = False  # add a 'confidence' output: the max probability per pixel
    precision: str = "fp32"  # fp32, fp16 or int8 (Q/DQ; needs calib)
    static: Size | str | None = None  # a fixed input size (WIDTHxHEIGHT), None: dynamic; a Size once checked
    batch: int = 1  # the fixed batch of a static model
    opset: int = 17  # ONNX opset (MIN_OPSET..MAX_OPSET of onnx_export)
    calib: Sequence[str | Path] | None = None  # int8 calibration sources: image folders, dataset roots, videos
    calib_frames: int = 64  # frames sampled across calib
    calib_topic: str | None = None  # the image topic of the bags among calib (--topic)
    calib_method: str = "minmax"  # int8 activation ranges: minmax, percentile or entropy
    int8_layout: str = "auto"  # auto: tensorrt with an engine, cpu without; or tensorrt, cpu
    samples: Sequence[str | Path] | None = None  # images for the parity check (default: held-out or generated)
    gate: float | None = None  # the share of pixels in (0, 1] that must agree; None: the precision's own
    slim: bool | None = None  # simplify with onnxslim; None: when installed
    engine: EngineOptions | None = None  # build a TensorRT engine with these options after parity
    factory: str | None = None  # python:MODULE:FUNCTION that builds a checkpoint of the user's own network
    layout: str | None = field(default=None, init=False)  # the int8 layout chosen, None unless int8
    layout_reason: str | None = field(default=None, init=False)  # what chose it

    def __post_init__(self) -> None:
        # the checks live beside the code they guard, which imports torch: imported here so that the
        # class (and its defaults) stays importable without torch, as `mslseg export x.onnx --trt` needs
        from mslseg.export.graph import check_io_options
        from mslseg.export.onnx_export import check_opset, check_precision, check_static
        from mslseg.export.parity import check_gate
        from mslseg.export.trt_profile import check_engine_target

        check_io_options(self.input_kind, self.input_order, self.output_kind)
        check_precision(self.precision)
        check_opset(self.opset)
        set_ = object.__setattr__  # frozen: the checked, normalised values replace the given ones
        set_(self, "static", check_static(self.static, self.batch))
        check_gate(self.gate)
        set_(self, "calib", tuple(Path(p) for p in self.calib) if self.calib else None)
        set_(self, "samples", tuple(Path(p) for p in self.samples) if self.samples else None)
        layout, why = self._check_int8()
        set_(self, "layout", layout)
        set_(self, "layout_reason", why)
        if self.engine is not None:
            check_engine_target(self.engine, precision=self.precision, int8_layout=layout,
                                source=f"the {self.precision} export")

    def _check_int8(self) -> tuple[str | None, str | None]:
        """(layout, why it was chosen) of an int8 export, (None, None) otherwise; InputError on a bad mix."""
        from mslseg.export.int8 import CALIBRATION_METHODS, choose_int8_layout

        if self.precision != "int8":
            if self.calib:
                raise InputError(f"--calib is for int8 export; a {self.precision} export does not use it")
            return None, None
        if not self.calib:
            raise InputError("int8 export needs calibration frames from the target domain: pass --calib "
                             "with an image folder, a dataset root or video files")
        if isinstance(self.calib_frames, bool) or not isinstance(self.calib_frames, int) or self.calib_frames < 1:
            raise InputError(f"--calib-frames must be an integer >= 1, got {self.calib_frames!r}")
        if self.calib_method not in CALIBRATION_METHODS:
            raise InputError(f"unknown calibration method '{self.calib_method}'; "
                             f"valid: {', '.join(CALIBRATION_METHODS)}")
        layout, why = choose_int8_layout(self.int8_layout, tensorrt=self.engine is not None)
        if self.engine is not None and layout == "cpu":
            raise InputError("--int8-layout cpu makes a file TensorRT cannot build (uint8 activations); "
                             "drop --trt, or use --int8-layout auto or tensorrt")
        return layout, why

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each option's default, e.g. to tell which options a user changed."""
        return {f.name: f.default for f in fields(cls) if f.init}

    def with_(self, **changes: Any) -> ExportSpec:
        """A copy with `changes`, checked again."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        return ExportSpec(**{**given, **changes})
