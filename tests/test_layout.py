"""The rooms of the house and what may import what (docs/architecture.md draws the same table).

Read from the source with `ast`, imports inside functions included: a lazy import is still a
dependency, and the rules say which of them are allowed (torch only inside the torch backend's
functions, Ray only in the cluster's run module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"mslseg.runtime": REPO / "runtime", "mslseg.export": REPO / "export", "mslseg": REPO / "mslseg"}

# room -> the mslseg rooms it may import (a room is a module name prefix; the longest prefix wins)
MAY_IMPORT = {
    "mslseg.runtime.errors": set(),
    "mslseg.runtime.sizes": {"mslseg.runtime.errors"},
    "mslseg.runtime.metadata": {"mslseg.runtime.errors", "mslseg.runtime.sizes"},
    "mslseg.runtime.io": {"mslseg.runtime.errors", "mslseg.runtime.sizes", "mslseg.runtime.metadata",
                          "mslseg.runtime.io"},
    "mslseg.runtime.signals": {"mslseg.runtime.errors"},
    "mslseg.runtime.onnx_reader": {"mslseg.runtime.errors", "mslseg.runtime.metadata", "mslseg.runtime.sizes"},
    "mslseg.runtime.backends": {"mslseg.runtime.errors", "mslseg.runtime.sizes", "mslseg.runtime.metadata",
                                "mslseg.runtime.onnx_reader", "mslseg.runtime.backends",
                                # the torch backend loads a .pt and adapts it online, inside its functions
                                "mslseg.checkpoint", "mslseg.training.online"},
    "mslseg.runtime.host_ops": {"mslseg.runtime.errors", "mslseg.runtime.sizes", "mslseg.runtime.metadata"},
    "mslseg.runtime.segmenter": {"mslseg.runtime.errors", "mslseg.runtime.sizes", "mslseg.runtime.metadata",
                                 "mslseg.runtime.backends", "mslseg.runtime.host_ops", "mslseg.runtime.onnx_reader"},
    "mslseg.runtime.stream": {"mslseg.runtime.errors", "mslseg.runtime.segmenter", "mslseg.runtime.io"},
    "mslseg.runtime.online_report": set(),  # what an adapting run writes and says (plain data)
    "mslseg.runtime.infer_job": {"mslseg.runtime.errors", "mslseg.runtime.sizes", "mslseg.runtime.metadata",
                                 "mslseg.runtime.segmenter", "mslseg.runtime.stream", "mslseg.runtime.io",
                                 "mslseg.runtime.signals", "mslseg.runtime.online_report"},
    "mslseg.runtime.cluster": {"mslseg.runtime.errors", "mslseg.runtime.sizes", "mslseg.runtime.metadata",
                               "mslseg.runtime.segmenter", "mslseg.runtime.infer_job", "mslseg.runtime.io",
                               "mslseg.runtime.cluster", "mslseg.runtime.signals",
                               "mslseg.runtime.backends.base"},  # the registry: which options a model's backend takes
    "mslseg.runtime.bench": {"mslseg.runtime.errors", "mslseg.runtime.sizes", "mslseg.runtime.metadata",
                             "mslseg.runtime.segmenter", "mslseg.runtime.backends", "mslseg.runtime.infer_job",
                             "mslseg.runtime.stream", "mslseg.runtime.io", "mslseg.runtime.bench",
                             "mslseg.runtime.onnx_reader"},
    "mslseg.runtime": {"mslseg.runtime"},  # the package's own lazy front door
}
# heavy packages the runtime may import, and where (always inside functions, checked by test_torch_free)
HEAVY = {
    "torch": ("mslseg.runtime.backends.torch_backend",  # a .pt runs through torch
              "mslseg.runtime.bench.harness"),  # the CPU capability line, only when a .pt is timed
    "ray": ("mslseg.runtime.cluster.run",),
    "tensorrt": ("mslseg.runtime.backends.trt_backend", "mslseg.runtime.backends.ort_backend"),
    "onnx": ("mslseg.runtime.bench.flops",),
}


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([prefix, *parts])] = path
    return found


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def _room(module: str, rooms) -> str | None:
    matches = [r for r in rooms if module == r or module.startswith(r + ".")]
    return max(matches, key=len) if matches else None


MODULES = _modules()
RUNTIME = sorted(m for m in MODULES if m.startswith("mslseg.runtime"))


@pytest.mark.parametrize("module", RUNTIME)
def test_runtime_rooms_import_only_what_the_table_allows(module):
    room = _room(module, MAY_IMPORT)
    assert room is not None, f"{module} is in no room of MAY_IMPORT: add it (and to docs/architecture.md)"
    allowed = MAY_IMPORT[room] | {room}
    bad = set()
    for name in _imports(MODULES[module]):
        if not name.startswith("mslseg"):
            continue
        if name in ("mslseg.runtime",) and room != "mslseg.runtime":
            bad.add(name)  # the front door imports lazily; a room importing it could import itself
            continue
        target = name if name in MODULES else name.rsplit(".", 1)[0]
        if target == "mslseg.runtime":
            continue
        if not any(target == a or target.startswith(a + ".") for a in allowed):
            bad.add(name)
    assert not bad, f"{module} ({room}) imports {sorted(bad)}; allowed: {sorted(allowed)}"


@pytest.mark.parametrize("package", sorted(HEAVY))
def test_heavy_packages_stay_in_their_runtime_rooms(package):
    bad = [m for m in RUNTIME if m not in HEAVY[package]
           and any(n == package or n.startswith(package + ".") for n in _imports(MODULES[m]))]
    assert not bad, f"{package} is imported by {bad}; in the runtime only {HEAVY[package]} may"


def test_export_and_training_never_reach_into_the_cluster_or_bench():
    for module, path in MODULES.items():
        if module.startswith(("mslseg.export", "mslseg.training", "mslseg.models", "mslseg.data")):
            reach = [n for n in _imports(path) if n.startswith(("mslseg.runtime.cluster", "mslseg.runtime.bench"))]
            assert not reach, f"{module} imports {reach}"
