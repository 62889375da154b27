"""Soak: the runtime over many generated frames, resident memory sampled as it goes.

    python benchmarks/soak.py                        # 10,000 frames of 128x64 through a ResNet-18 export
    python benchmarks/soak.py --model m.onnx --frames 10000 --size 512x256

Without --model it exports a small random-weight ResNet-18 DeepLab (uint8 in, labels out; needs
torch), then runs `Segmenter` on `--frames` frames (a few distinct generated frames, cycled, in
batches) and prints resident memory after warm-up, at the end and its growth (goal: < 5%), and
the frame rate. Memory is read from /proc/self/statm.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _export_small(folder: Path) -> Path:
    import torch

    from mslseg.classes import default_class_names, palette_for
    from mslseg.export import export_onnx
    from mslseg.models import deeplabv2
    from mslseg.runtime.metadata import ModelMeta

    torch.manual_seed(0)
    model = deeplabv2("resnet18", num_classes=19, multi_level=False).eval()
    names = default_class_names(19)
    meta = ModelMeta(num_classes=19, class_names=names, palette=palette_for(names))
    return export_onnx(model, meta, folder / "soak.onnx", input_kind="uint8", output_kind="labels", slim=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", default="128x64", help="WIDTHxHEIGHT of the frames")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--samples", type=int, default=20, help="memory samples over the run")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    import numpy as np

    from mslseg.runtime import Segmenter

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _export_small(Path(tmp))
        rng = np.random.default_rng(0)
        pool = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(8)]
        with Segmenter(model, device="cpu", batch_size=args.batch) as seg:
            for _ in range(3):
                seg.segment(pool[: args.batch])
            base = rss_mib()
            samples, done, t0 = [(0, base)], 0, time.perf_counter()
            every = max(1, args.frames // args.samples)
            while done < args.frames:
                n = min(args.batch, args.frames - done)
                results = seg.segment([pool[(done + i) % len(pool)] for i in range(n)])
                assert len(results) == n and results[0].labels.shape == (h, w)
                done += n
                if done // every != (done - n) // every:
                    samples.append((done, rss_mib()))
            seconds = time.perf_counter() - t0
    end = samples[-1][1]
    peak = max(m for _, m in samples)
    growth = 100 * (end - base) / base
    print(f"{done} frames of {w}x{h}, batch {args.batch}, {seconds:.0f} s ({done / seconds:.1f} FPS)")
    print("rss MiB: " + ", ".join(f"{f}:{m:.0f}" for f, m in samples))
    print(f"after warm-up {base:.1f} MiB, end {end:.1f} MiB, peak {peak:.1f} MiB: growth {growth:+.2f}% "
          f"({'within' if growth < 5 else 'ABOVE'} the 5% goal)")


if __name__ == "__main__":
    main()
