"""Managed (lifecycle) nodes, the way every MUSE node is one.

A MUSE node declares its parameters in ``__init__`` (so ``ros2 param list`` shows them while it
is still unconfigured) and overrides four hooks:

- ``configure()``: open files, devices, sockets, models; create publishers (with
  :meth:`ManagedNode.publisher`, lifecycle publishers that publish only while active),
  subscriptions and timers. Raise ``ValueError``/``LookupError``/``OSError`` for bad inputs.
- ``activate()``: start producing (threads that publish, a replay's clock).
- ``deactivate()``: stop producing; what was configured stays.
- ``cleanup()``: release everything ``configure()`` made (it must cope with a configure that
  failed half-way).

The base class maps them onto rclpy's ``on_configure`` ... ``on_shutdown`` (shutdown from any
state releases what is held), reports a failed configure as one clear line, and offers
``autostart`` for running a node alone. A lifecycle manager (``muse_bringup``), ``ros2
lifecycle set`` or :class:`LifecycleClient` drive the transitions through the standard
``<node>/change_state`` service.
"""

import threading
import time
import traceback

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos_overriding_options import QoSOverridingOptions

from muse_common import params

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE

# Errors a node raises for bad parameters or inputs: reported as one line, not a traceback.
INPUT_ERRORS = (ValueError, LookupError, OSError)

# Transition names (as ``ros2 lifecycle set`` spells them) -> lifecycle_msgs ids.
TRANSITIONS = {
    'configure': Transition.TRANSITION_CONFIGURE,
    'cleanup': Transition.TRANSITION_CLEANUP,
    'activate': Transition.TRANSITION_ACTIVATE,
    'deactivate': Transition.TRANSITION_DEACTIVATE,
    'unconfigured_shutdown': Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
    'inactive_shutdown': Transition.TRANSITION_INACTIVE_SHUTDOWN,
    'active_shutdown': Transition.TRANSITION_ACTIVE_SHUTDOWN,
}
STATE_LABELS = {
    State.PRIMARY_STATE_UNKNOWN: 'unknown', State.PRIMARY_STATE_UNCONFIGURED: 'unconfigured',
    State.PRIMARY_STATE_INACTIVE: 'inactive', State.PRIMARY_STATE_ACTIVE: 'active',
    State.PRIMARY_STATE_FINALIZED: 'finalized',
}


def describe(exc):
    """One line for an input error, the traceback for anything else (a bug)."""
    return str(exc) if isinstance(exc, INPUT_ERRORS) else '\n' + traceback.format_exc()


class ManagedNode(LifecycleNode):
    """Base of every MUSE node: a standard rclpy LifecycleNode with the hooks described above."""

    def __init__(self, name, **kwargs):
        super().__init__(name, **kwargs)
        self.exit_code = 0          # the process exit code run_node returns
        self.autostart = params.declare(
            self, 'autostart', False, 'Configure and activate right after start, for running '
            'this node alone; false = wait for a lifecycle manager (or ros2 lifecycle set).',
            read_only=True)
        self._configured = False
        self._active = False
        self._release_lock = threading.Lock()

    # --- hooks for subclasses ----------------------------------------------------------------

    def configure(self):
        """Make the node's resources (see the module docstring)."""

    def activate(self):
        """Start producing."""

    def deactivate(self):
        """Stop producing."""

    def cleanup(self):
        """Release what configure() made."""

    # --- helpers -----------------------------------------------------------------------------

    def publisher(self, msg_type, topic, qos_profile):
        """A lifecycle publisher (publishes only while active) whose QoS a parameter file can
        override. Destroy it in cleanup() with ``destroy_lifecycle_publisher``."""
        return self.create_lifecycle_publisher(
            msg_type, topic, qos_profile,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())

    def subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        """A subscription whose QoS a parameter file can override."""
        return self.create_subscription(
            msg_type, topic, callback, qos_profile,
            qos_overriding_options=QoSOverridingOptions.with_default_policies(), **kwargs)

    def wait_for_matches(self, publishers, timeout_s):
        """Wait (at most ``timeout_s``) until every subscription this process's graph knows of
        on each publisher's topic has matched it: DDS discovery is asynchronous, and a source
        that starts publishing before its subscribers have matched loses the first messages.
        Returns the topics still unmatched."""
        deadline = time.monotonic() + timeout_s
        while True:
            waiting = [p.topic_name for p in publishers
                       if p.get_subscription_count() < self.count_subscribers(p.topic_name)]
            if not waiting or time.monotonic() > deadline:
                return waiting
            time.sleep(0.01)

    @property
    def state_label(self):
        return self._state_machine.current_state[1]

    def is_active(self):
        return self._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE

    # --- rclpy lifecycle callbacks -----------------------------------------------------------

    def on_configure(self, state):
        try:
            self.configure()
        except Exception as exc:  # noqa: BLE001 - reported, and the node stays unconfigured
            self.get_logger().fatal(f'cannot configure: {describe(exc)}')
            self._release()
            return FAILURE
        self._configured = True
        return super().on_configure(state)

    def on_activate(self, state):
        result = super().on_activate(state)     # enables the lifecycle publishers
        self.activate()
        self._active = True
        return result

    def on_deactivate(self, state):
        self._stop_producing()
        return super().on_deactivate(state)     # disables them

    def on_cleanup(self, state):
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state):
        self._stop_producing()
        self._release()
        return SUCCESS

    def on_error(self, state):
        self._stop_producing()
        self._release()
        return SUCCESS

    def _stop_producing(self):
        if self._active:
            self._active = False
            self.deactivate()

    def _release(self):
        with self._release_lock:
            self._configured = False
            self.cleanup()

    def finish(self):
        """Leave the lifecycle for good (process exit): shut down from whatever state the node
        is in, releasing what it holds. Works after the ROS context is gone (Ctrl-C), when the
        transition itself can no longer be announced."""
        if self._state_machine.current_state[0] == State.PRIMARY_STATE_FINALIZED:
            return
        if self.context.ok():
            try:
                self.trigger_shutdown()
            except Exception:  # noqa: BLE001 - released directly below
                pass
        self._stop_producing()
        if self._configured:
            self._release()

    def start(self):
        """Configure and activate (autostart); False when configure failed."""
        if self.trigger_configure() != SUCCESS:
            return False
        return self.trigger_activate() == SUCCESS


class LifecycleClient:
    """Calls one managed node's ``change_state`` and ``get_state`` services from ``node``
    (whose executor must be spinning in another thread)."""

    def __init__(self, node, target, timeout_s=10.0):
        self.target = target.rstrip('/')
        self._timeout_s = timeout_s
        self._change = node.create_client(ChangeState, f'{self.target}/change_state')
        self._get = node.create_client(GetState, f'{self.target}/get_state')

    def wait_for_service(self, timeout_s):
        return (self._change.wait_for_service(timeout_sec=timeout_s)
                and self._get.wait_for_service(timeout_sec=timeout_s))

    def _call(self, client, request, what):
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self._timeout_s):
            client.remove_pending_request(future)
            raise TimeoutError(f'{self.target}: no answer to {what} within {self._timeout_s:g} s')
        if future.exception() is not None:
            raise future.exception()
        return future.result()

    def change_state(self, transition):
        """Ask for ``transition`` (a TRANSITIONS name); True when the node performed it."""
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[transition]
        return bool(self._call(self._change, request, transition).success)

    def get_state(self):
        """The node's primary state label: unconfigured, inactive, active or finalized."""
        return self._call(self._get, GetState.Request(), 'get_state').current_state.label
