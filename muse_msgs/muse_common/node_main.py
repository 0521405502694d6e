"""The one ``main()`` every MUSE node uses: init, spin, clean shutdown, exit 0 on Ctrl-C."""

import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor


def run_node(node_class, args=None, num_threads=None):
    """Create ``node_class()``, spin it until shutdown, then release it.

    A MultiThreadedExecutor lets nodes put slow work (inference, socket I/O) in their own
    callback groups without blocking the rest. Returns the process exit code.
    """
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = node_class()
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
