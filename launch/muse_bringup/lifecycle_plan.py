"""The order in which the lifecycle manager moves the MUSE graph (plain Python, no ROS).

Nav2's lifecycle manager habit: every node is configured in start order, then every node is
activated in start order; coming down, every active node is deactivated in reverse order, then
every configured node is cleaned up in reverse order, then shut down. With the start order of
``session.GRAPH_NODES`` (recorder first, replay last), the recorder hears everything and no
sensor data flows before its consumers are active; coming down, the replay stops first and the
recorder closes its bag last.
"""

# Primary states (lifecycle_msgs/State labels) and the transition that leaves each one on the
# way down.
UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = 'unconfigured', 'inactive', 'active', 'finalized'
_DOWN = {ACTIVE: ('deactivate', INACTIVE), INACTIVE: ('cleanup', UNCONFIGURED),
         UNCONFIGURED: ('unconfigured_shutdown', FINALIZED)}


def bringup_steps(nodes):
    """``[(node, transition), ...]`` taking every node from unconfigured to active."""
    return [(node, 'configure') for node in nodes] + [(node, 'activate') for node in nodes]


def teardown_steps(nodes, states):
    """``[(node, transition), ...]`` taking every node from ``states[node]`` (a primary state
    label; nodes missing from ``states`` or in another state are left alone) to finalized:
    deactivate all in reverse order, then clean up all, then shut down all."""
    states = dict(states)
    steps = []
    for from_state in (ACTIVE, INACTIVE, UNCONFIGURED):
        transition, to_state = _DOWN[from_state]
        for node in reversed(nodes):
            if states.get(node) == from_state:
                steps.append((node, transition))
                states[node] = to_state
    return steps


def state_after(transition):
    """The primary state a successful ``transition`` ends in."""
    return {'configure': INACTIVE, 'activate': ACTIVE, 'deactivate': INACTIVE,
            'cleanup': UNCONFIGURED}.get(transition, FINALIZED)
