"""The label-free scores: how a run without target labels ranks its checkpoints (higher is better).

Torch-free, so config validation and the CLI's help can list them; computed in
mslseg.training.label_free (`Signals.score`); `validation.score` names the one that picks best.pt;
benchmarks/label_free.py validates each against labelled runs.
"""

LABEL_FREE_SCORES: dict[str, str] = {
    "class_confidence": "mean over the source model's classes of the confidence of pixels predicted as each "
                        "(a vanished class counts 0)",
    "confidence": "mean max probability",
    "neg_entropy": "minus the mean per-pixel entropy",
    "im": "information maximisation: entropy of the mean prediction minus the mean entropy",
    "flip_agreement": "share of pixels whose label survives a horizontal flip",
    "scale_agreement": "share of pixels whose label survives running at 0.75x",
    "atc": "ATC: estimated pixel accuracy from a confidence threshold set on labelled source pixels",
}

# the score validation.score and `mslseg rank --score` default to: benchmarks/label_free.py chose it
# (docs/label-free.md: the best Spearman with the true mIoU over the DeepLab method table's runs)
DEFAULT_SCORE = "im"
# what `mslseg rank` ranks by, by default, when an exported model is among the models: an export
# gives labels and the max probability, not the whole distribution IM needs (the next best)
EXPORT_SCORE = "class_confidence"
