"""Area tables with bag stamps: a resumed run keeps the rows of a table written before rows had a
stamp_ns column (CSV) or field (JSON Lines), with an empty stamp, next to this run's stamped rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mslseg.runtime.io.result_writers import AreaTable
from mslseg.runtime.metadata import ModelMeta

META = ModelMeta(num_classes=2, class_names=("road", "sky"), palette=((128, 64, 128), (70, 130, 180)))


def test_a_csv_without_stamps_resumes_with_empty_stamp_cells(tmp_path):
    old = tmp_path / "areas.csv"
    old.write_text("source,frame,time_s,image,road,sky\n"
                   "a.mp4,0,0.0,,0.250000,0.750000\n"
                   "gone.mp4,0,0.0,,1.000000,0.000000\n")
    table = AreaTable(old, META, "csv", keep_sources={"a.mp4"})
    table.write("b.mcap:/cam", 3, 0.1, "", np.array([0.5, 0.5]), 1_700_000_000_100_000_000)
    table.close()
    rows = list(csv.reader(old.open()))
    assert rows == [["source", "frame", "time_s", "image", "stamp_ns", "road", "sky"],
                    ["a.mp4", "0", "0.0", "", "", "0.250000", "0.750000"],
                    ["b.mcap:/cam", "3", "0.1", "", "1700000000100000000", "0.500000", "0.500000"]]
    # resumed again, the stamped table is copied as it is
    again = AreaTable(old, META, "csv", keep_sources={"a.mp4", "b.mcap:/cam"})
    again.close()
    assert list(csv.reader(old.open())) == rows


@pytest.mark.parametrize("stamp", [None, 1_700_000_000_000_000_000])
def test_json_rows_gain_a_stamp_field(tmp_path, stamp):
    old = tmp_path / "areas.jsonl"
    old.write_text(json.dumps({"source": "a.mp4", "frame": 0, "time_s": 0.0, "image": "",
                               "areas": {"road": 0.25, "sky": 0.75}}) + "\n")
    table = AreaTable(old, META, "json", keep_sources={"a.mp4"})
    table.write("b", 1, None, "", np.array([1.0, 0.0]), stamp)
    table.close()
    kept, new = (json.loads(line) for line in old.read_text().splitlines())
    assert kept == {"source": "a.mp4", "frame": 0, "time_s": 0.0, "image": "", "stamp_ns": None,
                    "areas": {"road": 0.25, "sky": 0.75}}
    assert list(kept) == list(new) and new["stamp_ns"] == stamp
