"""The demo's library entry point: `mslseg.demo.run_demo` with its plans (the CLI test runs it)."""

import inspect
import subprocess
import sys

import pytest

from mslseg.demo import DemoPlan, DemoResult, run_demo
from mslseg.runtime.errors import InputError


def test_entry_point_and_plans():
    params = inspect.signature(run_demo).parameters
    assert list(params)[:2] == ["out", "plan"]
    assert params["overwrite"].kind is inspect.Parameter.KEYWORD_ONLY and params["overwrite"].default is False
    full, fast = DemoPlan.full(), DemoPlan.fast()
    assert fast.source_iterations < full.source_iterations and fast.adapt_iterations < full.adapt_iterations
    assert full.size == (128, 64)  # the synthetic config's size, where the README's method table was measured
    assert {"before", "after", "files", "seconds"} <= set(DemoResult.__dataclass_fields__)


def test_importing_the_demo_module_stays_light():
    code = "import sys, mslseg.demo; assert 'torch' not in sys.modules, 'mslseg.demo imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_non_empty_out_is_refused_without_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="--overwrite"):
        run_demo(tmp_path, DemoPlan.fast())
    assert (tmp_path / "keep.txt").read_text() == "mine"
