"""The bridge node at shutdown: a frame the asyncio thread hands over after the ROS context
has shut down is dropped, not published through a destroyed context."""

import rclpy

from muse_protocol import protocol


def test_a_frame_arriving_after_the_context_shut_down_is_not_published():
    from muse_cloud_bridge.cloud_bridge_node import CloudBridgeNode

    rclpy.init(args=['--ros-args', '-p', 'server_url:=ws://127.0.0.1:9', '-p', 'token:=x'])
    node = CloudBridgeNode()
    # Active, not only configured: an inactive lifecycle publisher drops the message before it
    # touches its handle, and the test could not fail. The link retries port 9 meanwhile.
    assert node.start()
    frame = protocol.AudioFrame(prompt_id=1, seq=0, sample_rate=8000, channels=1,
                                encoding=protocol.Encoding.PCM_S16LE, flags=protocol.Flags.FIRST,
                                payload=b'\x00\x00' * 8)
    try:
        node._publish_frame(frame)  # published while the context is up
        rclpy.shutdown()
        node._publish_frame(frame)  # the asyncio thread, racing the shutdown: no exception
    finally:
        node.finish()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
