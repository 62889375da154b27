"""`mslseg infer`'s progress bar is labelled with the source whose frames it counts, not the model."""

import io

from rich.console import Console
from rich.progress import Progress

from mslseg.cli.progress import SourceBar
from mslseg.runtime.infer_job import InferOptions, run_infer
from mslseg.runtime.io.sources import open_sources
from mslseg.runtime.segmenter import Segmenter
from tests.runtime import models


def test_the_bar_names_the_source_being_processed(cli_onnx, tmp_path):
    clips = [models.write_video(tmp_path / name, n=n) for name, n in (("first.mp4", 3), ("second.mp4", 2))]
    sources = [s for clip in clips for s in open_sources(str(clip))]
    seen = []  # (bar label, frames done) after each frame
    with Progress(console=Console(file=io.StringIO(), force_terminal=True)) as progress:
        task = progress.add_task("", total=5)
        bar = SourceBar(progress, task, [s.name for s in sources])
        assert progress.tasks[0].description == f"{sources[0].name} 1/2"  # before the first frame

        def on_frame(report):
            bar(report)
            seen.append((progress.tasks[0].description, progress.tasks[0].completed))

        with Segmenter(cli_onnx, device="cpu", threads=1) as seg:
            run_infer(sources, seg, InferOptions(out=tmp_path / "o", labels="none", areas="none"), on_frame=on_frame)
    for s in sources:
        s.close()
    first, second = (f"{s.name} {i}/2" for i, s in enumerate(sources, 1))
    assert seen == [(first, 1), (first, 2), (first, 3), (second, 4), (second, 5)]
    assert all(cli_onnx.name not in label for label, _ in seen)
