"""The order the lifecycle manager moves the graph in (plain logic, no ROS)."""

from muse_bringup.lifecycle_plan import bringup_steps, state_after, teardown_steps
from muse_bringup.session import GRAPH_NODES

NODES = ['recorder', 'player', 'replay']


def test_bringup_configures_all_in_order_then_activates_all_in_order():
    assert bringup_steps(NODES) == [
        ('recorder', 'configure'), ('player', 'configure'), ('replay', 'configure'),
        ('recorder', 'activate'), ('player', 'activate'), ('replay', 'activate')]


def test_teardown_goes_down_in_reverse_from_each_node_s_own_state():
    states = {'recorder': 'active', 'player': 'active', 'replay': 'inactive'}
    assert teardown_steps(NODES, states) == [
        ('player', 'deactivate'), ('recorder', 'deactivate'),
        ('replay', 'cleanup'), ('player', 'cleanup'), ('recorder', 'cleanup'),
        ('replay', 'unconfigured_shutdown'), ('player', 'unconfigured_shutdown'),
        ('recorder', 'unconfigured_shutdown')]


def test_teardown_leaves_unknown_and_finalized_nodes_alone():
    states = {'recorder': 'active', 'player': 'unknown', 'replay': 'finalized'}
    assert teardown_steps(NODES, states) == [
        ('recorder', 'deactivate'), ('recorder', 'cleanup'),
        ('recorder', 'unconfigured_shutdown')]
    assert teardown_steps(NODES, {}) == []


def test_each_transition_ends_in_its_primary_state():
    assert [state_after(t) for t in ('configure', 'activate', 'deactivate', 'cleanup',
                                     'unconfigured_shutdown')] == \
        ['inactive', 'active', 'inactive', 'unconfigured', 'finalized']


def test_the_graph_records_first_and_replays_last():
    names = [name for _, name in GRAPH_NODES]
    assert names[0] == 'session_recorder' and names[-1] == 'sensor_replay'
    steps = bringup_steps(names)
    assert steps[-1] == ('sensor_replay', 'activate')
    assert teardown_steps(names, {n: 'active' for n in names})[0] == ('sensor_replay', 'deactivate')
