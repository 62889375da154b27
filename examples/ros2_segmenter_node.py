"""A ROS 2 node: sensor_msgs/Image in; labels, overlay and the class map out, on the topic names
`mslseg infer BAG --topic IMAGE --bag-out` writes into its MCAP.

    ros2 run ... or: python examples/ros2_segmenter_node.py --ros-args -p model:=/path/model.onnx \
        -r image:=/camera/color/image_raw

Topics (IMAGE: the input topic as resolved, after remapping, e.g. /camera/color/image_raw):
    IMAGE                              (sub)  sensor_msgs/Image, encoding bgr8, rgb8 or mono8
    IMAGE/mslseg/labels                (pub)  sensor_msgs/Image mono8 (mono16 past 255 classes), the
                                              input's header (stamp, frame_id)
    IMAGE/mslseg/overlay/compressed    (pub)  sensor_msgs/CompressedImage jpeg, the input's size and header
    IMAGE/mslseg/classes               (pub)  std_msgs/String, JSON {"names": [...], "palette": [[r, g, b], ...]},
                                              published once with transient-local durability, so late
                                              subscribers still get it
Parameters: model (path), device (auto), threads (0: ONNX Runtime's default), size (""), alpha (0.5).

The bag path and this node give the same topics, types, headers and class map: a Foxglove layout
made on a recorded bag's `--bag-out` MCAP works unchanged on the live robot, and `ros2 bag record`
of this node's topics reads like that MCAP. The differences: the node keeps only the newest image
(depth 1), so a slow model drops frames rather than falling behind, where the bag path segments every
frame (or every --stride-th); and it reads raw images only (a bag may hold CompressedImage too).
Uses only mslseg's public runtime API; not run in CI (no ROS there).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from mslseg.runtime import InputError, Segmenter, overlay, palette_lut


def image_to_array(msg: Image) -> tuple[np.ndarray, bool]:
    """sensor_msgs/Image -> (H, W, 3) uint8 array and whether it is RGB (else BGR)."""
    channels = {"bgr8": 3, "rgb8": 3, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise InputError(f"unsupported image encoding '{msg.encoding}'; use bgr8, rgb8 or mono8")
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels), msg.encoding == "rgb8"


def array_to_image(array: np.ndarray, encoding: str, header) -> Image:
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding)
    msg.is_bigendian = 0
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


class SegmenterNode(Node):
    def __init__(self) -> None:
        super().__init__("mslseg_segmenter")
        model = self.declare_parameter("model", "").value
        device = self.declare_parameter("device", "auto").value
        threads = self.declare_parameter("threads", 0).value or None
        # "": the model's training size (right for the model); "WIDTHxHEIGHT" or "native" to override
        size = self.declare_parameter("size", "").value or None
        self.alpha = float(self.declare_parameter("alpha", 0.5).value)
        self.segmenter = Segmenter(model, device=device, threads=threads, size=size)
        self.get_logger().info(self.segmenter.describe())
        self.lut = palette_lut(self.segmenter.meta, "bgr")
        latest = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        sub = self.create_subscription(Image, "image", self.on_image, latest)
        # the outputs hang under the input's resolved name, as `mslseg infer --bag-out` names them
        base = sub.topic_name.rstrip("/") + "/mslseg"
        self.labels_pub = self.create_publisher(Image, f"{base}/labels", 10)
        self.overlay_pub = self.create_publisher(CompressedImage, f"{base}/overlay/compressed", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        meta = self.segmenter.meta
        classes = {"names": list(meta.class_names), "palette": [list(c) for c in meta.palette]}
        self.create_publisher(String, f"{base}/classes", latched).publish(String(data=json.dumps(classes)))

    def on_image(self, msg: Image) -> None:
        try:
            frame, is_rgb = image_to_array(msg)
            result = self.segmenter(frame, rgb=is_rgb)
        except InputError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        labels = result.labels
        encoding = "mono8" if labels.dtype == np.uint8 else "mono16"
        self.labels_pub.publish(array_to_image(labels, encoding, msg.header))
        bgr = np.ascontiguousarray(frame[..., ::-1]) if is_rgb else frame
        picture = overlay(bgr, labels, self.lut, self.alpha, outline=True)  # as --bag-out draws it
        ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
        self.overlay_pub.publish(CompressedImage(header=msg.header, format="jpeg", data=jpeg.tobytes()))

    def destroy_node(self) -> None:
        self.segmenter.close()
        super().destroy_node()


def main() -> None:
    rclpy.init()
    node = SegmenterNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
