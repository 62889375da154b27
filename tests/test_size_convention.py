"""One size convention: every CLI option and public function that takes a size takes WIDTHxHEIGHT.

The CLI side walks every option of every command; the Python side walks every public function
and class of the packages users import. A new option or parameter that spells a size another way
(H W, BATCHxHxW, a bare (h, w) tuple) fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest
import typer
from typer.testing import CliRunner

import mslseg
from mslseg.cli.app import app
from mslseg.runtime.errors import InputError
from mslseg.runtime.sizes import NATIVE, Size, parse_run_size

OTHER_SPELLINGS = re.compile(r"HxW|H W\b|BATCHx|\(height, width\)|\(H, W\)", re.IGNORECASE)
runner = CliRunner()


def _is_size_name(name: str) -> bool:
    return name in ("size", "sizes", "static", "train_size", "warmup") or (
        name.endswith("_size") and name not in ("batch_size", "queue_size"))


def _cli_options():
    group = typer.main.get_command(app)
    for command_name, command in group.commands.items():
        for param in command.params:
            yield command_name, param


def test_the_one_parser():
    assert Size.parse("1024x512") == Size(1024, 512) and Size(1024, 512).hw == (512, 1024)
    assert str(Size.parse(" 64X32 ")) == "64x32"
    assert Size.of([128, 64]) == Size(128, 64) and parse_run_size("native") == NATIVE
    for bad in ("512", "512x", "x512", "0x5", "1024x512x3", "-4x3", "axb"):
        with pytest.raises(InputError, match="WIDTHxHEIGHT"):
            Size.parse(bad)
    with pytest.raises(InputError, match=r"Size\(width, height\)"):
        Size.of((512, 1024))  # is it (h, w) or (w, h)? refused rather than guessed


def test_every_size_option_of_every_command_says_width_x_height():
    found = []
    for command_name, param in _cli_options():
        text = f"{param.help or ''} {param.metavar or ''}"
        assert not OTHER_SPELLINGS.search(text), f"{command_name} {param.opts}: {text}"
        if _is_size_name(param.name or "") and param.name != "warmup":  # bench --warmup is a count
            found.append(f"{command_name} {param.opts[0]}")
            assert re.search(r"WIDTHxHEIGHT|WxH", text), f"{command_name} {param.opts}: {text}"
    # the commands that take a size today; a new one is checked above without being listed here
    for expected in ("synth --size", "train --size", "adapt --size", "evaluate --size", "infer --size",
                     "bench --size", "export --static", "export --min", "export --opt", "export --max"):
        assert expected in found, f"{expected} is gone or renamed: {found}"


@pytest.mark.parametrize("args", [
    ["synth", "{tmp}/s", "--size", "{bad}"],
    ["train", "-c", "synthetic", "--size", "{bad}", "--out", "{tmp}/r"],
    ["evaluate", "{tmp}/m.pt", "--data", "{tmp}", "--size", "{bad}"],
    ["infer", "{tmp}/v.mp4", "--model", "{tmp}/m.onnx", "--size", "{bad}", "--out", "{tmp}/o"],
    ["bench", "{tmp}/m.onnx", "--size", "{bad}"],
    ["export", "{tmp}/m.pt", "--static", "{bad}"],
    ["export", "{tmp}/m.pt", "--opt", "{bad}", "--trt"],
])
def test_a_bad_size_is_refused_by_the_one_parser_before_anything_else(args, tmp_path):
    """Even with inputs that do not exist, the size is what the user hears about first."""
    r = runner.invoke(app, [a.format(tmp=tmp_path, bad="512x") for a in args])
    assert r.exit_code in (1, 2), r.output
    assert "'512x' is not WIDTHxHEIGHT" in r.output, r.output
    assert not any(tmp_path.iterdir())  # nothing written


def _public_callables():
    import mslseg.export
    import mslseg.runtime

    packages = [mslseg.runtime, mslseg.export]
    modules = ["mslseg.data.synthetic", "mslseg.training.eval_run", "mslseg.checkpoint"]
    names = modules + [m.name for p in packages for m in pkgutil.walk_packages(p.__path__, p.__name__ + ".")]
    for name in names:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj):
                yield f"{name}.{attr}.__init__", obj.__init__
                for meth, fn in vars(obj).items():
                    if not meth.startswith("_") and inspect.isfunction(fn):
                        yield f"{name}.{attr}.{meth}", fn
            elif inspect.isfunction(obj):
                yield f"{name}.{attr}", obj


# frame geometry read from decoded frames, never typed by a user
INTERNAL = {"mslseg.runtime.io.video_writer"}


def test_every_public_function_taking_a_size_takes_a_size():
    checked = []
    for where, fn in _public_callables():
        if any(where.startswith(m + ".") for m in INTERNAL):
            continue
        for p in inspect.signature(fn).parameters.values():
            if not _is_size_name(p.name) or p.annotation is inspect.Parameter.empty:
                continue
            annotation = str(p.annotation)
            if annotation in ("bool", "int", "str", "list[str]") or annotation.startswith("tuple[int, int, int]"):
                continue  # flags, counts, 'WxH' strings of reports, tensor shapes (N, H, W) in tensor order
            checked.append(f"{where}({p.name})")
            assert "Size" in annotation and "tuple[int, int]" not in annotation, f"{where}({p.name}: {annotation})"
    assert any("Segmenter.__init__(size)" in c for c in checked) and any("export_onnx(static)" in c for c in checked)
    assert any("generate_scene(size)" in c for c in checked), checked


def test_metadata_reads_and_writes_one_spelling():
    from mslseg.runtime.metadata import ModelMeta

    meta = ModelMeta(num_classes=1, class_names=("a",), palette=((1, 2, 3),), train_size=Size(128, 64))
    assert meta.to_dict()["train_size"] == "128x64"
    assert ModelMeta.from_json(meta.to_json()).train_size == Size(128, 64)
    legacy = meta.to_dict() | {"train_size": [64, 128]}  # how the first release wrote it: [height, width]
    assert ModelMeta.from_dict(legacy).train_size == Size(128, 64)


def test_interpolation_flags_are_opencvs():
    import cv2

    from mslseg.runtime.sizes import INTERPOLATIONS

    assert INTERPOLATIONS == {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}


def test_docs_spell_sizes_one_way():
    from pathlib import Path

    root = Path(mslseg.__file__).resolve().parent.parent
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        old = r"(?<!the old `)(--static \d+ \d+|--(min|opt|max) \d+x\d+x\d+)|size=\(\d+, \d+\)"
        assert not re.search(old, text), doc  # "the old `--static 48 64`" in bad-inputs.md is history
