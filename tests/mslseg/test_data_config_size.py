"""Data sizes are `Size` in the config; YAML, --set and run dirs written before that still read the same."""

import pytest
import yaml

from mslseg.data.config import DataConfig
from mslseg.runtime.errors import MslsegError
from mslseg.runtime.sizes import Size
from mslseg.training.config import load_config, to_dict
from mslseg.training.resume import resume_config

SHIPPED = "synthetic"  # its YAML spells sizes as [width, height] lists


@pytest.mark.parametrize("spelling", ["96x48", "96,48", [96, 48]])
def test_every_spelling_a_config_accepts_gives_a_size(spelling):
    cfg = load_config(SHIPPED, {"source.size": spelling, "source.crop": spelling})
    assert cfg.source.size == Size(96, 48) and cfg.source.crop == Size(96, 48)
    assert load_config(SHIPPED).source.size == Size(128, 64)  # the file's own [128, 64]


@pytest.mark.parametrize("bad", ["96x", "0x48", [96], [96, 48.5], "wide"])
def test_a_bad_size_names_its_key(bad):
    with pytest.raises(MslsegError, match=r"source\.size.* WIDTHxHEIGHT"):
        load_config(SHIPPED, {"source.size": bad})


def test_code_passing_width_height_pairs_still_gets_sizes():
    cfg = DataConfig(size=(64, 32), crop=[32, 16])
    assert (cfg.size, cfg.crop) == (Size(64, 32), Size(32, 16))


def test_the_resolved_config_writes_sizes_as_users_type_them_and_reads_back(tmp_path):
    cfg = load_config(SHIPPED, {"source.crop": "64x32"})
    written = to_dict(cfg)
    assert written["source"]["size"] == "128x64" and written["source"]["crop"] == "64x32"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    assert resume_config(tmp_path) == cfg


def test_a_run_dir_written_before_sizes_were_size_still_resumes(tmp_path):
    old = to_dict(load_config(SHIPPED))
    for section in ("source", "target", "target_val"):  # how older mslseg wrote them: [width, height]
        old[section]["size"] = [128, 64]
    old["source"]["crop"] = [64, 32]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    cfg = resume_config(tmp_path, ["train.iterations=7"])
    assert cfg.target_val.size == Size(128, 64) and cfg.source.crop == Size(64, 32)
    assert cfg.train.iterations == 7
