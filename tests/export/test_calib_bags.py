"""int8 calibration frames from a robot bag: the topic's frames, sampled evenly like a video's; no topic
given lists the bag's image topics."""

from __future__ import annotations

import numpy as np
import pytest

from mslseg.export.calibration import load_frames
from mslseg.runtime.errors import InputError
from tests.runtime import bags

FRONT, REAR = "/front/image_raw", "/rear/image_raw"


def test_calibration_reads_the_bags_topic_evenly(tmp_path):
    front = bags.frames(10, 16, 24, seed=6)
    bag = bags.write_mcap(tmp_path / "cal.mcap", {FRONT: front, REAR: bags.frames(2, 16, 24, seed=7)})
    frames = load_frames([bag], 4, topic=FRONT)
    picks = np.linspace(0, 9, 4).round().astype(int)
    assert len(frames) == 4 and all(np.array_equal(f, front[i]) for f, i in zip(frames, picks, strict=True))
    folder = bags.write_rosbag2_sqlite(tmp_path / "r2", {FRONT: front[:3]})
    assert len(load_frames([bag, folder], 13, topic=FRONT)) == 13
    with pytest.raises(InputError, match=f"choose one with --topic:\n  {FRONT}"):
        load_frames([bag], 4)
