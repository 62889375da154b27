"""`run_infer`: sources -> `segment_stream` -> overlay video, label maps, class areas, summary.

What `mslseg infer` runs. Layout of the output folder:

    <stem>_overlay.mp4          per video / camera / stream source
    overlays/<image>.jpg        per image of an image source
    labels/<stem>/<frame>.png   --labels png (frame = 6-digit index, or the image's name; a bag's
                                frames: <index>_<header stamp ns>, e.g. 000012_1700000000400000000)
    labels/<stem>.npz           --labels npz (a bag's: with its frames' stamp_ns)
    areas.csv | areas.jsonl     class pixel fractions per frame (--areas csv | json)
    <stem>.mcap                 --bag-out: labels, overlay and class map as ROS 2 messages (io/bag_writer.py)
    summary.json                frames, FPS, per-stage ms, per-source problems

Each file appears under its final name only when complete; a failure removes the partial ones.
A stop (`stop`: Ctrl-C, SIGTERM, q in the window) ends the source under way early: its files are
closed and published as a playable, consistent prefix, but it gets no done marker (.done/<stem>.json),
so `--resume` processes it again from its first frame and replaces them; the finished sources
before it keep their markers and are skipped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.errors import InputError
from mslseg.runtime.io.atomic import atomic_write_bytes, atomic_write_text, refuse_existing
from mslseg.runtime.io.bag_writer import McapOut, check_bag_out
from mslseg.runtime.io.result_writers import AreaTable, LabelNpz, LabelPngFolder
from mslseg.runtime.io.video_writer import open_video_writer
from mslseg.runtime.io.viz import overlay, palette_lut
from mslseg.runtime.online_report import ADAPTED, SNAPSHOTS, adaptation_line, adaptation_record, snapshots_every
from mslseg.runtime.segmenter import Segmenter
from mslseg.runtime.signals import stop_signals
from mslseg.runtime.stream import StreamResult, segment_stream

log = logging.getLogger(__name__)

LABEL_FORMATS = ("png", "npz", "none")
AREA_FORMATS = ("csv", "json", "none")
STAGES = ("decode", "pre", "infer", "post", "encode")
DONE_FOLDER = ".done"  # one marker per completed source, written after its outputs


@dataclass(frozen=True)
class InferOptions:
    out: Path
    labels: str = "png"  # png | npz | none
    areas: str = "csv"  # csv | json | none
    overlay: bool = True  # overlay video (or images) of the labels over the frames
    alpha: float = 0.5  # weight of the label colours in the overlay
    legend: bool = True  # overlays: outline the classes, append a legend strip (taller than the frame)
    codec: str = "auto"  # overlay video codec: auto (H.264 if PyAV has it, else mp4v) | h264 | mp4v
    overwrite: bool = False  # replace files in an existing, non-empty output folder
    resume: bool = False  # continue an interrupted run in `out`: skip the sources already complete
    show: bool = False  # a live window
    queue_size: int = 4  # batches waiting between decode, inference and encode
    bag_out: bool = False  # an MCAP per source: labels, overlay, class map as ROS 2 messages (io/bag_writer.py)
    bag_out_source: bool = False  # with bag_out: the camera topic copied into that MCAP too
    adapt_save: int = 0  # an adapting model (.pt, adapt=): a snapshot every N frames in OUT/adapted/ (0: none)

    def __post_init__(self) -> None:
        if self.labels not in LABEL_FORMATS:
            raise InputError(f"unknown label format '{self.labels}'; valid: {', '.join(LABEL_FORMATS)}")
        if self.areas not in AREA_FORMATS:
            raise InputError(f"unknown areas format '{self.areas}'; valid: {', '.join(AREA_FORMATS)}")
        if self.bag_out_source and not self.bag_out:
            raise InputError("--bag-out-source copies the camera into the MCAP that --bag-out writes; add --bag-out")


@dataclass
class SourceReport:
    name: str
    kind: str
    frames: int = 0
    expected: int | None = None
    outputs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    resumed: bool = False  # complete from an earlier run (--resume), not processed again
    complete: bool = False  # every frame written and its done marker with it: --resume skips it
    live: dict | None = None  # camera/stream: stall_timeout_s, reconnect, reconnects, stopped (why it ended early)


@dataclass
class InferSummary:
    out: Path
    model: str
    frames: int
    seconds: float
    stage_ms: dict[str, float]  # mean per frame
    sources: list[SourceReport]
    interrupted: bool = False
    run_size: str = ""  # the size frames ran at and why: Segmenter.describe_size()
    adaptation: dict | None = None  # online adaptation: settings, updates, ms/frame, resets, snapshots

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def problems(self) -> list[str]:
        return [p for s in self.sources for p in s.problems]

    def line(self) -> str:
        stages = " ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        head = "interrupted: " if self.interrupted else ""
        resumed = sum(r.resumed for r in self.sources)
        tail = f" ({resumed} source(s) complete from an earlier run)" if resumed else ""
        at = f" at {self.run_size}" if self.run_size else ""
        live = [r.live for r in self.sources if r.live]
        if live:
            done = sum(x["reconnects"] for x in live)
            tail += (f"; live: no-frame timeout {live[0]['stall_timeout_s']:g} s, reconnect {live[0]['reconnect']}"
                     + (f", {done} reconnect(s) made" if done else ""))
        if self.adaptation:
            tail += "; " + adaptation_line(self.adaptation)
        return (f"{head}{self.frames} frames{at} in {self.seconds:.1f} s ({self.fps:.1f} FPS; "
                f"ms/frame: {stages}) -> {self.out}{tail}")

    def where_stopped(self, total_sources: int) -> str:
        """Where an interrupted run stopped: "in b.mp4 after 57 of 120 frames; 1 of 2 source(s) complete"."""
        complete = sum(r.complete for r in self.sources)
        partial = next((r for r in self.sources if not r.complete and r.frames), None)
        if partial is None:
            finished = [r for r in self.sources if r.complete]
            at = f"after {finished[-1].name}" if finished else "before the first frame"
        else:
            of = f" of {partial.expected}" if partial.expected is not None else ""
            at = f"in {partial.name} after {partial.frames}{of} frames"
        return f"{at}; {complete} of {total_sources} source(s) complete"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"], d["fps"] = str(self.out), round(self.fps, 3)
        return d


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty existing folder unless `overwrite` (checked before anything is written)."""
    refuse_existing(out, overwrite, folder=True)


class _SourceOutputs:
    """The per-source writers; opened lazily (the first frame gives the video size)."""

    def __init__(self, source: Any, stem: str, opts: InferOptions, segmenter: Segmenter,
                 lut: np.ndarray) -> None:
        self.source, self.opts, self.lut, self.meta = source, opts, lut, segmenter.meta
        self.still = source.kind == "images"
        self.video = None
        self.video_path = opts.out / f"{stem}_overlay.mp4"
        label_dir = opts.out / "labels"
        self.labels: LabelPngFolder | LabelNpz | None = None
        if opts.labels != "none":
            label_dir.mkdir(parents=True, exist_ok=True)
            self.labels = (LabelPngFolder(label_dir / stem) if opts.labels == "png"
                           else LabelNpz(label_dir / f"{stem}.npz", self.meta))
        if opts.overlay and self.still:
            (opts.out / "overlays").mkdir(parents=True, exist_ok=True)
        self.mcap: McapOut | None = None  # --bag-out; if it cannot start, the writers above are dropped
        try:
            self.mcap = (McapOut(opts.out / f"{stem}.mcap", source, self.meta, overlay=opts.overlay,
                                 copy_source=opts.bag_out_source) if opts.bag_out else None)
        except BaseException:
            self.abort()
            raise

    def write(self, item: StreamResult, areas: AreaTable | None) -> np.ndarray | None:
        frame, labels = item.frame, item.result.labels
        wanted = self.opts.overlay or self.opts.show
        legend = self.opts.legend
        picture = (overlay(frame.image, labels, self.lut, self.opts.alpha,
                           names=self.meta.class_names if legend else None, outline=legend)
                   if wanted else None)  # the legend strip makes it taller than the frame
        if self.opts.overlay and self.still:
            import cv2

            ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
            atomic_write_bytes(self.opts.out / "overlays" / f"{Path(frame.name).stem}.jpg", data.tobytes())
        elif self.opts.overlay:
            if self.video is None:
                self.video = open_video_writer(self.video_path, self.source.fps, picture.shape[:2],
                                               self.opts.codec)
            self.video.write(picture)
        stamp = getattr(frame, "stamp_ns", None)  # bag frames; plain arrays and older Frames have none
        if isinstance(self.labels, LabelPngFolder):
            self.labels.write(label_name(frame.index, frame.name, stamp), labels)
        elif isinstance(self.labels, LabelNpz):
            self.labels.write(frame.index, labels, stamp)
        if areas is not None:
            areas.write(self.source.name, frame.index, frame.time_s, frame.name,
                        item.result.class_fractions(self.meta.num_classes), stamp)
        if self.mcap is not None:  # --bag-out
            self.mcap.write(frame, labels, picture if self.opts.overlay else None)
        return picture

    def close(self) -> list[str]:
        done = [w.close() for w in (self.video, self.labels, self.mcap) if w is not None]
        if self.opts.overlay and self.still:
            done.append(self.opts.out / "overlays")
        return [str(p) for p in done]

    def abort(self) -> None:
        for w in (self.video, self.labels, self.mcap):
            if w is not None:
                with suppress(Exception):
                    w.abort()
        for folder in ("overlays", "labels"):  # made for this source; shared, so only when empty
            with suppress(OSError):
                (self.opts.out / folder).rmdir()


def label_name(index: int, name: str, stamp_ns: int | None) -> str:
    """A frame's label PNG name: the image's stem, a bag frame's `000012_<stamp ns>`, else `000012`."""
    if name:
        return Path(name).stem
    return f"{index:06d}" if stamp_ns is None else f"{index:06d}_{stamp_ns}"


def unique_stems(stems: list[str]) -> list[str]:
    """File stems made unique in order: a, a_2, a_3, ..."""
    seen: set[str] = set()
    out = []
    for base in stems:
        stem, n = base, 2
        while stem in seen:
            stem, n = f"{base}_{n}", n + 1
        seen.add(stem)
        out.append(stem)
    return out


def marker_path(out: Path, stem: str) -> Path:
    return out / DONE_FOLDER / f"{stem}.json"


def write_marker(marker: Path, report: SourceReport) -> None:
    """Mark a source complete (after its outputs and its area rows are under their final names)."""
    marker.parent.mkdir(exist_ok=True)
    report.complete = True
    atomic_write_text(marker, json.dumps(asdict(report) | {"resumed": False}))


def load_marker(marker: Path) -> SourceReport:
    """The report a done marker holds, as a resumed source (keys this version does not know are ignored)."""
    known = {f.name for f in fields(SourceReport)}
    saved = {k: v for k, v in json.loads(marker.read_text()).items() if k in known}
    return SourceReport(**(saved | {"resumed": True, "complete": True}))


def segment_source(source: Any, stem: str, segmenter: Segmenter, opts: InferOptions, report: SourceReport,
                   totals: dict[str, float], *, lut: np.ndarray, areas: Any, stop: threading.Event,
                   on_frame: Callable[[SourceReport], None] | None = None, window: Any = None) -> None:
    """Segment one source into its files under `opts.out` (published when it ends, removed on failure).

    Adds its frames and problems to `report` and its per-stage milliseconds to `totals`; `areas`
    (anything with AreaTable's `write`, or None) gets a row per frame. The caller closes `source`
    and writes the done marker. Shared by `run_infer` and the workers of a cluster run.
    """
    outputs = _SourceOutputs(source, stem, opts, segmenter, lut)
    if source.live:
        source.stop = stop  # a stalled stream's waits (timeout, reconnect backoff) end on Ctrl-C
    try:
        for item in segment_stream(source, segmenter, stop=stop, queue_size=opts.queue_size,
                                   drop_late=source.live):
            t0 = time.perf_counter()
            picture = outputs.write(item, areas)
            if window is not None and not window.show(picture):
                stop.set()
            t = item.result.timings
            for key, value in (("decode", item.decode_ms), ("pre", t.pre_ms), ("infer", t.infer_ms),
                               ("post", t.post_ms), ("encode", (time.perf_counter() - t0) * 1e3)):
                totals[key] += value
            report.frames += 1
            if on_frame is not None:
                on_frame(report)
    except BaseException:
        outputs.abort()
        raise
    if report.frames:
        try:
            report.outputs = outputs.close()
        except BaseException:  # a full disk at close: no partial output under any name
            outputs.abort()
            raise
    else:  # nothing decoded: no empty video, label folder or overlay folder
        outputs.abort()
    report.problems.extend(source.problems)
    report.live = source.live_report() if source.live else None


def run_infer(sources: list[Any], segmenter: Segmenter, opts: InferOptions, *,
              on_frame: Callable[[SourceReport], None] | None = None,
              stop: threading.Event | None = None) -> InferSummary:
    """Segment every source into `opts.out` (see the module docstring); `stop` ends the run cleanly.

    Without a `stop` of its own, a caller in the main thread gets `mslseg infer`'s signal policy
    (`mslseg.runtime.signals`): the first Ctrl-C or SIGTERM ends the run as `stop` would, its outputs
    resumable, and then takes its usual effect: KeyboardInterrupt, or SystemExit(143) for SIGTERM.
    """
    if stop is not None:
        return _run_infer(sources, segmenter, opts, on_frame, stop)
    with stop_signals() as flag:
        summary = _run_infer(sources, segmenter, opts, on_frame, flag.event)
    flag.raise_default()
    return summary


def _run_infer(sources: list[Any], segmenter: Segmenter, opts: InferOptions,
               on_frame: Callable[[SourceReport], None] | None, stop: threading.Event) -> InferSummary:
    check_output_folder(opts.out, opts.overwrite or opts.resume)
    if opts.bag_out:
        check_bag_out(sources)
    window = None
    if opts.show:
        from mslseg.runtime.io.display import Window

        window = Window(f"mslseg: {segmenter.path.name}")
    opts.out.mkdir(parents=True, exist_ok=True)
    lut = palette_lut(segmenter.meta, "bgr")
    stems_of = unique_stems([src.stem for src in sources])

    def done_marker(stem: str) -> Path:
        return marker_path(opts.out, stem)

    areas = None
    if opts.areas != "none":
        name = "areas.csv" if opts.areas == "csv" else "areas.jsonl"
        areas = AreaTable(opts.out / name, segmenter.meta, opts.areas,
                          keep_sources={src.name for src, stem in zip(sources, stems_of, strict=True)
                                        if done_marker(stem).is_file()} if opts.resume else set())
    totals = dict.fromkeys(STAGES, 0.0)
    reports: list[SourceReport] = []
    adapting = segmenter.adaptation is not None
    snapshots: list[str] = []
    if adapting and opts.adapt_save:
        on_frame = snapshots_every(opts.adapt_save, segmenter, opts.out / SNAPSHOTS, snapshots, on_frame)
    start = time.perf_counter()
    try:
        for source, stem in zip(sources, stems_of, strict=True):
            if stop.is_set():
                break
            marker = done_marker(stem)
            if opts.resume and marker.is_file():
                reports.append(load_marker(marker))
                source.close()
                continue
            report = SourceReport(source.name, source.kind, expected=source.expected)
            reports.append(report)
            segment_source(source, stem, segmenter, opts, report, totals, lut=lut, areas=areas, stop=stop,
                           on_frame=on_frame, window=window)
            source.close()
            if not stop.is_set() and report.frames:  # complete: a --resume run skips it
                if areas is not None:
                    areas.snapshot()  # its rows reach the final table before its marker exists
                write_marker(marker, report)
        if areas is not None:
            areas.close()
            areas = None
    finally:
        if areas is not None:
            areas.abort()
        if window is not None:
            window.close()
    frames = sum(r.frames for r in reports if not r.resumed)  # this run's frames
    seconds = time.perf_counter() - start
    adaptation = None
    if adapting:  # complete or stopped: the adapted state is kept, and --resume continues from it
        adaptation = adaptation_record(segmenter, segmenter.save_adapted(opts.out / ADAPTED), snapshots)
    summary = InferSummary(opts.out, segmenter.describe(), frames, seconds,
                           {k: round(v / max(frames, 1), 3) for k, v in totals.items()}, reports,
                           interrupted=stop.is_set(), run_size=segmenter.describe_size(), adaptation=adaptation)
    atomic_write_text(opts.out / "summary.json", json.dumps(summary.to_dict(), indent=2))
    return summary
