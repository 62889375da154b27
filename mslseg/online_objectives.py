"""Online adaptation's choices (`mslseg infer --adapt`, `Segmenter(adapt=...)`): the objectives and
what may learn.

Torch-free, so `mslseg infer --help` can list them; the losses behind the objectives are bound in
mslseg.training.online (`OBJECTIVES`), which checks it has one for every name here.
"""

ONLINE_OBJECTIVES: dict[str, str] = {
    "msl": "max-squares (the paper's loss)",
    "iw-msl": "image-wise class-balanced max-squares",
    "entropy": "entropy, as TENT (the baseline)",
    "none": "each batch's BatchNorm statistics, no update",
}
ONLINE_PARAMS: dict[str, str] = {
    "norm": "the normalisation layers' affine parameters (TENT's choice)",
    "all": "every weight",
}
# the defaults OnlineConfig and `mslseg infer --adapt-*` share
DEFAULT_LR = 1e-3  # SGD, momentum 0.9: the norm layers' affine parameters hold at it (docs/online.md)
DEFAULT_EVERY = 1  # an update on every batch
DEFAULT_GUARD = 10  # the collapse guard checks every 10th batch
