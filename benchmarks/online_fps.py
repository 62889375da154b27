"""What online adaptation costs in frame rate: `mslseg infer`'s pipeline (decode, segment, encode
overlays and label maps) on one video, plain and adapting, side by side in one run.

    python benchmarks/online_fps.py runs/methods/source/best.pt data/drift/drift.mp4 --frames 400 --out runs/online-fps

Rows: the .pt without adaptation, --adapt msl at every batch, every 2nd and every 4th (the
collapse guard on, as by default), and BatchNorm statistics only (--adapt none). Prints the CPU
line (model, SIMD flags) first, then FPS and the ratio to the plain row; writes OUT/results.json.
The rows run one after another, each twice (the second counted), so that a warm page cache and
torch's first-call costs do not favour the later rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROWS = {  # name -> Segmenter adapt= (None: plain)
    "plain (no adaptation)": None,
    "--adapt none (BN statistics)": {"objective": "none"},
    "--adapt msl, every batch": {"objective": "msl", "every": 1},
    "--adapt msl --adapt-every 2": {"objective": "msl", "every": 2},
    "--adapt msl --adapt-every 4": {"objective": "msl", "every": 4},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("video", type=Path)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--out", type=Path, default=Path("runs/online-fps"))
    args = ap.parse_args()

    from mslseg.runtime import Segmenter
    from mslseg.runtime.bench.machine import cpu_flags, describe_cpu, machine_info
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.io.live import LivePolicy
    from mslseg.runtime.io.sources import FrameRange, open_sources

    machine = machine_info(os.cpu_count(), cpu_flags())
    print(describe_cpu(machine), flush=True)
    results = {"machine": machine, "frames": args.frames, "rows": {}}
    scratch = Path(tempfile.mkdtemp(prefix="online-fps-"))
    try:
        for name, adapt in ROWS.items():
            for attempt in range(2):
                out = scratch / f"{len(results['rows'])}-{attempt}"
                sources = open_sources(str(args.video), FrameRange(None, str(args.frames), 1), LivePolicy())
                with Segmenter(args.checkpoint, device="cpu", **({"adapt": adapt} if adapt else {})) as seg:
                    summary = run_infer(sources, seg, InferOptions(out=out, codec="mp4v"))
            row = {"fps": summary.fps, "stage_ms": summary.stage_ms, "adaptation": summary.adaptation}
            results["rows"][name] = row
            plain = results["rows"][next(iter(ROWS))]["fps"]
            print(f"{name}: {summary.fps:.1f} FPS ({summary.fps / plain:.2f} of plain)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
