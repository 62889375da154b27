"""docs/images/gradients.png: why max-squares (Chen et al. 2019) and how IW weights classes.

    python scripts/plot_gradients.py [OUT.png]

Left: the gradient magnitude of each loss with respect to the predicted probability p of the
chosen class in the two-class case: entropy's grows without bound as p -> 1 (confident, easy
pixels dominate); max-squares' grows linearly, 2p - 1. Right: the image-wise class weight
w_k = 1 / max(N_k^alpha N^(1-alpha), 1) relative to the unweighted 1/N, against the share of the
image the class covers, for alpha = 0.2 (GTA5) and -0.2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/gradients.png")
    p = np.linspace(0.5, 0.999, 400)
    entropy = np.abs(np.log(p / (1 - p)))  # d/dp of -(p log p + (1-p) log(1-p))
    max_squares = 2 * p - 1  # d/dp of (p^2 + (1-p)^2) / 2
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(p, entropy, label="entropy (MinEnt)")
    a.plot(p, max_squares, label="max-squares (MSL)")
    a.set_xlabel("probability p of the predicted class (2 classes)")
    a.set_ylabel("|d loss / d p|")
    a.set_title("gradient per pixel")
    a.legend()
    n = 512 * 1024
    share = np.logspace(-4, 0, 200)
    for alpha in (0.2, -0.2):
        w = 1 / np.maximum((share * n) ** alpha * n ** (1 - alpha), 1)
        b.plot(share, w * n, label=f"alpha = {alpha}")
    b.axhline(1.0, color="grey", lw=0.8, ls="--", label="no weighting")
    b.set_xscale("log")
    b.set_yscale("log")
    b.yaxis.set_major_locator(FixedLocator([0.2, 0.5, 1, 2, 5]))
    b.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    b.yaxis.set_minor_formatter(NullFormatter())
    b.set_xlabel("share of the image's pixels predicted as class k")
    b.set_ylabel("weight relative to 1/N")
    b.set_title("image-wise class balance (IW)")
    b.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
