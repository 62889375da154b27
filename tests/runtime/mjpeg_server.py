"""A local MJPEG-over-HTTP server as IP cameras serve it, that tests stall, stop and restart.

multipart/x-mixed-replace with one JPEG part per frame, on 127.0.0.1 and a free port. Each
session (start .. stop) draws its frames at its own grey level, so a consumer can tell which
session a frame came from.

    with MjpegServer() as server:          # serving at server.url
        server.stall()                     # connections stay open, no more bytes: a hung camera
        server.stall_after(10)             # the same, once this session has sent 10 frames
        server.stop()                      # connections closed, port refused: a camera gone
        server.start()                     # the same port again, a new session
"""

from __future__ import annotations

import http.server
import threading
import time

import cv2
import numpy as np

SESSION_GREYS = (60, 190, 120)


class MjpegServer:
    def __init__(self, fps: float = 25.0, size: tuple[int, int] = (48, 64)) -> None:
        self.fps, self.size = fps, size
        self.port = 0
        self.session = -1
        self.sent: list[int] = []  # frames sent per session
        self._stalled = threading.Event()
        self._alive = threading.Event()
        self._http: http.server.ThreadingHTTPServer | None = None
        self._limit: int | None = None  # frames this session sends at most
        self._lock = threading.Lock()  # start/stop from the test and from drop_after's thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> MjpegServer:
        with self._lock:
            return self._start()

    def _start(self) -> MjpegServer:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self)

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self.session += 1
        self.sent.append(0)
        self._stalled.clear()
        self._limit = None
        self._alive.set()
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stall(self) -> None:
        """Keep every connection open and send nothing more (a hung camera or a dead link)."""
        self._stalled.set()

    def stall_after(self, frames: int) -> None:
        """Once this session has sent `frames` frames, send nothing more (connections stay open)."""
        self._limit = frames

    def stop(self) -> None:
        """Close the connections and the port (the camera went away)."""
        with self._lock:
            self._alive.clear()
            if self._http is not None:
                self._http.shutdown()
                self._http.server_close()
                self._http = None

    def drop_after(self, frames: int, down_s: float | None) -> None:
        """After `frames` frames of this session: stop; start again after `down_s` s (None: never)."""
        def run() -> None:
            session = self.session
            while self.sent[session] < frames:
                time.sleep(0.005)
            self.stop()
            if down_s is not None:
                time.sleep(down_s)
                self.start()

        self._limit = frames  # no frame past `frames` while the stop comes
        threading.Thread(target=run, daemon=True).start()

    def frame(self, session: int, n: int) -> bytes:
        h, w = self.size
        image = np.full((h, w, 3), SESSION_GREYS[session % len(SESSION_GREYS)], np.uint8)
        cv2.rectangle(image, ((n * 3) % w, 8), ((n * 3) % w + 12, h - 8), (255, 255, 255), -1)
        return cv2.imencode(".jpg", image)[1].tobytes()

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        session = self.session
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        while self._alive.is_set() and session == self.session:
            if self._stalled.is_set():
                time.sleep(0.02)
                continue
            if self._limit is not None and self.sent[session] >= self._limit:
                time.sleep(0.01)
                continue
            data = self.frame(session, self.sent[session])
            try:
                handler.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                    % len(data) + data + b"\r\n")
                handler.wfile.flush()
            except OSError:
                return
            self.sent[session] += 1
            time.sleep(1.0 / self.fps)

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
