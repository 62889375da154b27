"""A live window for `mslseg infer --show` (OpenCV HighGUI), refused clearly where none can open."""

from __future__ import annotations

import os
import sys

import numpy as np

from mslseg.runtime.errors import InputError


class Window:
    """Shows frames in one window; `show` returns False once the user pressed q or Esc.

    Frames under 640 px wide open scaled up by a whole factor (the window stays resizable).
    """

    def __init__(self, title: str = "mslseg") -> None:
        import cv2

        has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        if sys.platform.startswith("linux") and not has_display:
            raise InputError("--show needs a display, and none is set (DISPLAY); "
                             "drop --show on a headless machine")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise InputError(
                "--show needs OpenCV with GUI support; this is a headless build: "
                "pip uninstall opencv-python-headless && pip install opencv-python"
            ) from None
        self._cv2, self.title, self._sized = cv2, title, False

    def show(self, image: np.ndarray) -> bool:
        if not self._sized:  # a small frame opens scaled up, so its legend reads on a large screen
            h, w = image.shape[:2]
            if (k := max(1, 640 // max(w, 1))) > 1:
                self._cv2.resizeWindow(self.title, w * k, h * k)
            self._sized = True
        self._cv2.imshow(self.title, image)
        return (self._cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        self._cv2.destroyWindow(self.title)
