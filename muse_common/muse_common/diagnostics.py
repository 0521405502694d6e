"""Periodic health reports on /diagnostics, the ROS 2 habit (diagnostic_updater is not
available as a wheel, so this is its small core: named checks polled on a timer)."""

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType

from muse_common import topics

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR
STALE = DiagnosticStatus.STALE


class DiagnosticsReporter:
    """Polls registered checks every ``period_s`` and publishes one DiagnosticArray.

    A managed node makes it in ``configure`` and destroys it in ``cleanup``: health is reported
    whenever the node holds resources, active or not (a plain publisher, not a lifecycle one).

    A check is a callable returning ``(level, message, values)`` where ``values`` is a mapping
    of key to anything ``str()`` can render. A check that raises is reported as ERROR.
    """

    def __init__(self, node, period_s=1.0, hardware_id='muse'):
        self._node = node
        self._hardware_id = hardware_id
        self._checks = []
        self._publisher = node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        # Health is a wall-clock matter: with use_sim_time the node clock follows the replay's
        # /clock, which stands still before the replay starts and after it ends.
        self._timer = node.create_timer(period_s, self.publish,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))

    def destroy(self):
        """Stop reporting (a managed node's cleanup)."""
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._publisher)

    def add(self, name, check):
        self._checks.append((name, check))

    def publish(self):
        array = DiagnosticArray()
        array.header.stamp = self._node.get_clock().now().to_msg()
        for name, check in self._checks:
            try:
                level, message, values = check()
            except Exception as exc:  # a broken check must not take the node down
                level, message, values = ERROR, f'check failed: {exc!r}', {}
            array.status.append(DiagnosticStatus(
                level=level, name=f'{self._node.get_name()}: {name}', message=message,
                hardware_id=self._hardware_id,
                values=[KeyValue(key=str(k), value=_render(v)) for k, v in values.items()]))
        self._publisher.publish(array)


def _render(value):
    if isinstance(value, float):
        return f'{value:.4g}'
    return str(value)
