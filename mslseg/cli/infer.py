"""`mslseg infer`: segment videos, images, robot bags, cameras and streams with an exported model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mslseg.architectures import FACTORY_OPTION_HELP
from mslseg.cli.choices import choice_enum
from mslseg.online_objectives import DEFAULT_EVERY, DEFAULT_GUARD, DEFAULT_LR, ONLINE_OBJECTIVES, ONLINE_PARAMS
from mslseg.runtime.infer_job import AREA_FORMATS, LABEL_FORMATS  # brings cv2: `mslseg infer` needs it anyway
from mslseg.runtime.io.video_writer import CODECS

LabelFormat = choice_enum("LabelFormat", LABEL_FORMATS)
AdaptObjective = choice_enum("AdaptObjective", ONLINE_OBJECTIVES)
AdaptParams = choice_enum("AdaptParams", ONLINE_PARAMS)
AreaFormat = choice_enum("AreaFormat", AREA_FORMATS)
Codec = choice_enum("Codec", CODECS)


def infer(
    sources: Annotated[list[str], typer.Argument(
        help="Videos, images, robot bags (.mcap, .bag, .db3, a rosbag2 folder; with --topic), folders, globs "
        "(quoted), a camera index (0) or an rtsp:// / http:// URL.")],
    model: Annotated[Path, typer.Option(
        "--model", "-m", help="Model: .onnx, .engine/.plan (with its .json), or .pt.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output folder (refused if it exists and is not empty).")] = Path("mslseg_out"),
    batch: Annotated[int, typer.Option(min=1, help="Frames per model run.")] = 1,
    topic: Annotated[str | None, typer.Option(
        metavar="NAME", help="The image topic to segment in each bag (sensor_msgs/Image or CompressedImage). "
        "A bag given without it: the error (exit 1) lists its image topics with type, count and size.")] = None,
    stride: Annotated[int, typer.Option(min=1, help="Take every K-th frame.")] = 1,
    start: Annotated[str | None, typer.Option(
        help="First frame: a frame number (120) or a time (2.5s, 1:30); in a bag, the message index or "
        "seconds from the topic's first stamp.")] = None,
    end: Annotated[str | None, typer.Option(help="Stop before this frame number or time.")] = None,
    stall_timeout: Annotated[float, typer.Option(
        min=0.001, metavar="SECONDS", help="A camera or stream that delivers no frame for this long has "
        "stopped (files never time out).")] = 10.0,
    reconnect: Annotated[int, typer.Option(
        min=0, metavar="N", help="Reopen a stopped camera or stream up to N times per outage, after 1, 2, 4, "
        "8 s; when all fail, the outputs keep the frames so far and the exit code is 3.")] = 0,
    labels: Annotated[LabelFormat, typer.Option(
        help="Label maps: a lossless PNG per frame, one .npz per video, or none.")] = LabelFormat.png,
    areas: Annotated[AreaFormat, typer.Option(
        help="Per-frame class areas: areas.csv, areas.jsonl, or none.")] = AreaFormat.csv,
    overlay: Annotated[bool, typer.Option(
        help="Write an overlay video (overlay images for image sources).")] = True,
    alpha: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Weight of the label colours in the overlay.")] = 0.5,
    legend: Annotated[bool, typer.Option(
        help="Outline the classes and append a legend strip of the classes present below each overlay "
        "(taller than the source); --no-legend: the plain blend at the source's size.")] = True,
    bag_out: Annotated[bool, typer.Option(
        "--bag-out", help="Also write <stem>.mcap per source for Foxglove / ROS 2: labels (sensor_msgs/Image mono8) "
        "on TOPIC/mslseg/labels, the overlay (jpeg) on TOPIC/mslseg/overlay/compressed, the class map on "
        "TOPIC/mslseg/classes, stamped with each frame's header stamp and frame_id. Videos, cameras and streams "
        "too (TOPIC /<stem>/image, frame_id camera, the frame's time, or the wall clock live); images are "
        "refused: they have no times.")] = False,
    bag_out_source: Annotated[bool, typer.Option(
        "--bag-out-source", help="(--bag-out) Copy the camera into the MCAP too: a bag's topic as recorded, "
        "from the first segmented frame to the last; other sources' frames as jpeg on /<stem>/image/compressed.")
    ] = False,
    codec: Annotated[Codec, typer.Option(
        help="Overlay codec: auto (H.264 via PyAV, else mp4v), h264, mp4v.")] = Codec.auto,
    size: Annotated[str | None, typer.Option(
        metavar="WxH|native", help="Run the model at WIDTHxHEIGHT, e.g. 1024x512, or 'native' (each frame's "
        "own size). Default: the model's training size, resized as in training; labels come back at "
        "each frame's size.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda[:N], tensorrt[:N].")] = "auto",
    threads: Annotated[int | None, typer.Option(
        min=1, help="CPU threads: ONNX Runtime's intra-op pool (.onnx; default: one per core) or "
        "torch.set_num_threads (.pt); a .engine does not take it.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace files in an existing output folder.")] = False,
    resume: Annotated[bool, typer.Option(
        help="Continue an interrupted run into the same --out: sources already complete are skipped.")] = False,
    show: Annotated[bool, typer.Option(help="Show a live window (needs a display); q or Esc stops.")] = False,
    factory: Annotated[str | None, typer.Option(metavar="python:MODULE:FUNCTION",
                                                help=f"(.pt) {FACTORY_OPTION_HELP}")] = None,
    cluster: Annotated[str | None, typer.Option(
        metavar="auto|ray://HOST:PORT", help="Split the sources across Ray workers (needs mslseg[cluster]): auto "
        "(RAY_ADDRESS if set, else a local Ray), ray://HOST:PORT (Ray Client) or a cluster address. The model "
        "and --out must be on storage every node sees. See docs/cluster.md.")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="(--cluster) Workers to start (default: as many as the cluster's resources fit).")] = None,
    cpus_per_worker: Annotated[float, typer.Option(
        min=0.0, help="(--cluster) CPUs each worker takes (also its ONNX Runtime threads unless --threads).")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(
        min=0.0, help="(--cluster) GPUs each worker takes (1: a GPU each; 0.5: two workers share one).")] = 0.0,
    adapt: Annotated[AdaptObjective | None, typer.Option(
        help="(.pt) Adapt the model online while it segments: "
        + "; ".join(f"{k}: {v}" for k, v in ONLINE_OBJECTIVES.items()) + ". The adapted network is written to OUT/adapted.pt "
        "(at the end, and on Ctrl-C / SIGTERM); --resume continues from it. See docs/online.md.",
        rich_help_panel="Online adaptation")] = None,
    adapt_every: Annotated[int, typer.Option(
        min=1, metavar="K", help="(--adapt) Update on every K-th batch; the others are only segmented.",
        rich_help_panel="Online adaptation")] = DEFAULT_EVERY,
    adapt_lr: Annotated[float, typer.Option(
        min=0.0, help="(--adapt) SGD learning rate (momentum 0.9).", rich_help_panel="Online adaptation")] = DEFAULT_LR,
    adapt_params: Annotated[AdaptParams, typer.Option(
        help="(--adapt) What learns: " + "; ".join(f"{k}: {v}" for k, v in ONLINE_PARAMS.items()) + ".",
        rich_help_panel="Online adaptation")] = AdaptParams.norm,
    adapt_teacher: Annotated[float | None, typer.Option(
        min=0.0, max=0.99999, metavar="ALPHA", help="(--adapt) A mean teacher with this momentum makes the "
        "predictions (CoTTA: 0.999).", rich_help_panel="Online adaptation")] = None,
    adapt_restore: Annotated[float, typer.Option(
        min=0.0, max=1.0, metavar="P", help="(--adapt) Stochastic restore: each adapted weight returns to the "
        "model's value with probability P per update (CoTTA: 0.01).", rich_help_panel="Online adaptation")] = 0.0,
    adapt_guard: Annotated[int, typer.Option(
        min=0, metavar="K", help="(--adapt) The collapse guard checks every K-th batch against the starting model "
        "and goes back to the last healthy state when classes vanish (0: no guard).",
        rich_help_panel="Online adaptation")] = DEFAULT_GUARD,
    adapt_save: Annotated[int, typer.Option(
        min=0, metavar="N", help="(--adapt) Also write a snapshot every N frames: OUT/adapted/frame-0001000.pt, "
        "an ordinary checkpoint (mslseg export takes it).", rich_help_panel="Online adaptation")] = 0,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Log details (DEBUG level), ONNX Runtime's own log and the CUDA library "
        "preload included; without it a provider that does not load is one line.")] = False,
) -> None:
    """Segment frames and write an overlay video, label maps, class areas and a summary."""
    if verbose:  # mslseg's loggers only: DEBUG everywhere would bring every library's chatter
        import logging

        logging.getLogger("mslseg").setLevel(logging.DEBUG)
    from mslseg.runtime.errors import DataError, InputError
    from mslseg.runtime.infer_job import InferOptions, check_output_folder, run_infer
    from mslseg.runtime.io.live import LivePolicy
    from mslseg.runtime.io.sources import FrameRange, open_sources
    from mslseg.runtime.segmenter import Segmenter
    from mslseg.runtime.sizes import parse_run_size

    opts = InferOptions(out=out, labels=labels.value, areas=areas.value, overlay=overlay, alpha=alpha, legend=legend,
                        codec=codec.value, overwrite=overwrite, resume=resume, show=show,
                        bag_out=bag_out, bag_out_source=bag_out_source, adapt_save=adapt_save)
    check_output_folder(out, overwrite or resume)
    if factory and model.suffix.lower() != ".pt":
        raise InputError(f"--factory names the code of a .pt checkpoint; {model.name} is an exported model, "
                         "which runs without it: drop --factory")
    # only what the user set: an option the model's backend does not take is then an error, not dropped
    backend_options = {k: v for k, v in {"factory": factory, "threads": threads}.items() if v is not None}
    backend_options |= _adapt_options(model, out, resume, cluster, adapt, adapt_every, adapt_lr, adapt_params,
                                      adapt_teacher, adapt_restore, adapt_guard, adapt_save)
    model_size = parse_run_size(size)
    frames = FrameRange(start, end, stride)
    live = LivePolicy(stall_timeout=stall_timeout, reconnect=reconnect)
    opened = []
    if cluster is not None:  # the sources on Ray workers; what follows the run is the same
        from mslseg.cli.infer_cluster import run_on_cluster
        from mslseg.runtime.cluster import ClusterOptions

        summary, signum, n_sources = run_on_cluster(
            sources, model, opts, ClusterOptions(address=cluster, workers=workers, cpus_per_worker=cpus_per_worker,
                                                 gpus_per_worker=gpus_per_worker),
            segmenter_options={"device": device, "batch_size": batch, "size": model_size,
                               **backend_options}, frames=frames, topic=topic)
    else:
        try:
            for spec in sources:
                opened.extend(open_sources(spec, frames, live, topic=topic))
            if topic is not None and not any(s.kind == "bag" for s in opened):
                raise InputError(f"--topic {topic} names a bag's image topic, but no bag (.mcap, .bag, .db3 or "
                                 "a rosbag2 folder) was given; drop --topic or give a bag")
            with Segmenter(model, device=device, batch_size=batch, size=model_size,
                           **backend_options) as segmenter:
                summary, signum = _run_with_progress(opened, segmenter, opts, run_infer)
        finally:
            for source in opened:
                source.close()
        n_sources = len(opened)
    typer.echo(summary.line())
    if summary.interrupted:  # a signal, or q / Esc in the window (as Ctrl-C)
        from mslseg.runtime.signals import exit_code, stopped_by

        name = stopped_by(signum)
        if any(source.live for source in opened):  # a camera or stream cannot be continued where it was
            next_step = f"outputs kept in {out}; a live source starts anew: give a fresh --out to run again"
        else:
            next_step = f"continue with: {_resume_command()}"
        typer.echo(f"{name} {summary.where_stopped(n_sources)}; {next_step}", err=True)
        raise typer.Exit(exit_code(signum))  # 130 for Ctrl-C, 143 for SIGTERM: a scheduler sees a preemption
    lost = [r for r in summary.sources if r.live and r.live["stopped"]]
    for r in lost:  # outputs closed and complete; 3 tells a supervisor the source, not the input, failed
        typer.echo(f"{r.live['stopped']}; kept {r.frames} frames in {out}", err=True)
    problems = summary.problems
    if lost and problems:
        typer.echo(f"error: {problems[0]} (all problems: {out / 'summary.json'})", err=True)
    if lost:
        raise typer.Exit(3)
    if problems:
        more = f" (and {len(problems) - 1} more, in {out / 'summary.json'})" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)


def _adapt_options(model: Path, out: Path, resume: bool, cluster: str | None, adapt, every: int, lr: float,
                   params, teacher: float | None, restore: float, guard: int, save: int) -> dict:
    """The backend options of --adapt* (none without --adapt); one line for what cannot adapt."""
    from mslseg.runtime.errors import InputError
    from mslseg.runtime.online_report import ADAPTED

    if adapt is None:
        given = [flag for flag, on in (("--adapt-every", every != DEFAULT_EVERY), ("--adapt-save", save),
                                       ("--adapt-lr", lr != DEFAULT_LR), ("--adapt-teacher", teacher is not None),
                                       ("--adapt-restore", restore), ("--adapt-params", params.value != "norm"),
                                       ("--adapt-guard", guard != DEFAULT_GUARD)) if on]
        if given:
            raise InputError(f"{', '.join(given)} set(s) online adaptation, which is off; add --adapt msl (or another "
                             "objective) or drop them")
        return {}
    if model.suffix.lower() != ".pt":
        raise InputError(f"--adapt learns from the frames, which needs torch's gradients: {model.name} is an exported "
                         "model; give the .pt checkpoint it was exported from (then export OUT/adapted.pt)")
    if cluster is not None:
        raise InputError("--adapt keeps one model learning from one stream; Ray workers would each adapt their own: "
                         "drop --cluster, or adapt first and give the workers the exported OUT/adapted.pt")
    options = {"adapt": {"objective": adapt.value, "every": every, "lr": lr, "params": params.value,
                         "teacher_alpha": teacher, "restore": restore, "check_every": guard}}
    saved = out / ADAPTED
    if resume and saved.is_file():
        options["adapt_from"] = saved
        typer.echo(f"continuing online adaptation from {saved}", err=True)
    return options


def _resume_command() -> str:
    """This command line with --resume, as the user typed it (in words where it was not typed)."""
    import shlex
    import sys

    args = sys.argv[1:]
    at = args.index("infer") if "infer" in args else -1
    if at < 0 or not all(a.startswith("-") for a in args[:at]):  # not from a shell: a test, an embedding
        return "the same command with --resume"
    return shlex.join(["mslseg", *args, *([] if "--resume" in args else ["--resume"])])


def _run_with_progress(sources, segmenter, opts, run_infer):
    """run_infer under a progress bar; returns (summary, the first stop signal: SIGINT if none)."""
    import signal

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from mslseg.cli.progress import SourceBar
    from mslseg.runtime.signals import stop_signals

    class FpsColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed or 0:5.1f} fps")

    console = Console(stderr=True)
    expected = [s.expected for s in sources]
    total = sum(expected) if all(e is not None for e in expected) else None
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               FpsColumn(), TimeRemainingColumn()]
    # the first Ctrl-C or SIGTERM: finish the batch, close the files; a second Ctrl-C aborts (partial
    # files are removed); a repeated SIGTERM is ignored (mslseg.runtime.signals holds the policy)
    with stop_signals() as flag, \
            Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("", total=total)
        on_frame = SourceBar(progress, task, [s.name for s in sources])
        summary = run_infer(sources, segmenter, opts, stop=flag.event, on_frame=on_frame)
        return summary, flag.signum or signal.SIGINT
