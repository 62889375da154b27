"""A plain Python loop: segment a camera or a video with an exported model, no torch needed.

    pip install "dist/mslseg-0.1.0-py3-none-any.whl[cpu]"   # the wheel: README, "Set up"
    python examples/segment_video.py model.onnx 0              # camera 0, prints timings
    python examples/segment_video.py model.onnx clip.mp4 --save overlay.mp4

Uses only the public runtime API: Segmenter, palette_lut, overlay.
"""

from __future__ import annotations

import argparse
import time

import cv2

from mslseg.runtime import Segmenter, overlay, palette_lut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".onnx, .engine (with its .json) or .pt")
    parser.add_argument("source", help="camera index (0) or a video file / URL")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", help="WIDTHxHEIGHT or native (default: the model's training size)")
    parser.add_argument("--save", help="write the overlay to this .mp4")
    parser.add_argument("--frames", type=int, default=0, help="stop after N frames (0: all)")
    args = parser.parse_args()

    cap = cv2.VideoCapture(int(args.source) if args.source.isdigit() else args.source)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {args.source}")
    writer = None
    with Segmenter(args.model, device=args.device, size=args.size) as seg:
        print(seg.describe())  # says the size frames run at
        lut = palette_lut(seg.meta)  # BGR colours, like the frames OpenCV reads
        n, start = 0, time.perf_counter()
        while args.frames == 0 or n < args.frames:
            ok, frame = cap.read()  # BGR uint8, the Segmenter's default order
            if not ok:
                break
            result = seg(frame)  # result.labels: (H, W) uint8 class ids at the frame's size
            picture = overlay(frame, result.labels, lut, alpha=0.5)
            if args.save:
                if writer is None:
                    h, w = frame.shape[:2]
                    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
                    writer = cv2.VideoWriter(args.save, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(picture)
            n += 1
            t = result.timings
            print(f"frame {n}: pre {t.pre_ms:.1f} ms, infer {t.infer_ms:.1f} ms, post {t.post_ms:.1f} ms, "
                  f"{n / (time.perf_counter() - start):.1f} FPS", end="\r")
    print()
    cap.release()
    if writer is not None:
        writer.release()


if __name__ == "__main__":
    main()
