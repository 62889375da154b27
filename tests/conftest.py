"""Shared fixtures. Torch runs on one thread: two cores, and tests may run beside a decoder."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """Tiny synthetic GTA5-layout source and Cityscapes-layout target (train + val) at 64x32."""
    from mslseg.data.synthetic import write_cityscapes_layout, write_gta5_layout

    root = tmp_path_factory.mktemp("synth")
    write_gta5_layout(root / "gta5", 12, "64x32", seed=0)
    write_cityscapes_layout(root / "cityscapes", 8, 4, "64x32", seed=1)
    return root


@pytest.fixture(autouse=True)
def _signal_handlers_restored(request):
    """Each test starts with the handlers the one before it found: a command run in-process (CliRunner)
    or a library (ray.init) that leaves its own SIGINT/SIGTERM handler would change what later tests of
    Ctrl-C and SIGTERM see. A leak is written to MSLSEG_SIGNAL_LEAKS when that is set, to find its test."""
    import os
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in before.items():
        if signal.getsignal(s) is not handler:
            if os.environ.get("MSLSEG_SIGNAL_LEAKS"):
                with open(os.environ["MSLSEG_SIGNAL_LEAKS"], "a") as f:
                    f.write(f"{request.node.nodeid} {signal.Signals(s).name} {signal.getsignal(s)}\n")
            signal.signal(s, handler)
