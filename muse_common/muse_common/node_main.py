"""The one ``main()`` every MUSE node uses: init, spin, clean shutdown, exit 0 on Ctrl-C.

Every MUSE node is a managed node (:mod:`muse_common.lifecycle`): it starts unconfigured and
waits for a lifecycle manager, unless its ``autostart`` parameter is true.
"""

import gc
import sys
import traceback

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from muse_common.lifecycle import INPUT_ERRORS, ManagedNode


def run_node(node_class, args=None):
    """Create ``node_class()``, spin it until shutdown, then release it.

    Every MUSE node keeps slow work (inference, audio, sockets, disk) in threads of its own, so
    the executor only moves messages, and a SingleThreadedExecutor does that best: rclpy's
    MultiThreadedExecutor was seen stalling for seconds in processes that had imported torch,
    losing best-effort IMU samples at 128 Hz. Returns the process exit code: 1 when the node
    could not be created or (with ``autostart``) configured, else the node's ``exit_code``
    attribute (a node that fails while running sets it), 0 by default. On the way out a managed
    node is shut down from whatever state it is in, so it releases what it holds.
    """
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    exit_code = 0
    try:
        node = node_class()
        if isinstance(node, ManagedNode) and node.autostart and not node.start():
            node.exit_code = 1
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:
        if node is None:
            logger = rclpy.logging.get_logger(node_class.__name__)
            detail = exc if isinstance(exc, INPUT_ERRORS) else '\n' + traceback.format_exc()
            logger.fatal(f'cannot start: {detail}')
            exit_code = 1
        elif rclpy.ok():
            raise
        # Otherwise Ctrl-C shut the context down while the executor was building its wait
        # set (rclpy raises RCLError there, not ExternalShutdownException): a clean stop.
    finally:
        if node is not None:
            exit_code = getattr(node, 'exit_code', 0)
            if isinstance(node, ManagedNode):
                node.finish()
            node.destroy_node()
        # A node whose constructor failed is still registered (weakly) with the context; let it
        # go before shutdown, which would otherwise call destroy_node on the half-built object.
        gc.collect()
        rclpy.try_shutdown()
    return exit_code
