"""config/muse.yaml is the one parameter file of the graph: every key in it must be a
parameter the node really declares (a typo would be silently ignored by ROS), with the type
and value the file gives, and every parameter a node declares must carry a description.

Each node is started as its own process exactly as the runner and the launch file start it
(the YAML plus muse_bringup.graph's per-session overrides), then asked over ROS services.
"""

import os
import sys
from pathlib import Path

import pytest
import yaml
from muse_bringup import graph
from muse_bringup.session import GRAPH_NODES, SessionPaths

PARAMS_FILE = Path(__file__).resolve().parents[1] / 'config' / 'muse.yaml'
BUILT_IN = {'use_sim_time', 'start_type_description_service'}


def yaml_parameters():
    document = yaml.safe_load(PARAMS_FILE.read_text())
    return {key.split('/')[-1]: value['ros__parameters'] for key, value in document.items()}


def test_every_graph_node_has_a_section():
    assert set(yaml_parameters()) == {name for _, name in GRAPH_NODES}


@pytest.fixture(scope='module')
def subject(tmp_path_factory):
    from muse_sensors.synthetic import write_subject
    return write_subject(tmp_path_factory.mktemp('subject'), 1, 2.0, 3, chest=False)


@pytest.mark.parametrize('package,name', GRAPH_NODES, ids=[n for _, n in GRAPH_NODES])
def test_node_declares_every_yaml_parameter_with_a_description(package, name, subject, tmp_path,
                                                               spawn, ros_node, wait_until):
    from rclpy.parameter import parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    def call(future):
        wait_until(future.done, 20.0, 'an answer from the parameter service')
        return future.result()

    namespace = f'yaml_check_{os.getpid()}'
    options = graph.GraphOptions(subject=str(subject), session=SessionPaths(tmp_path),
                                 rate=1.0, sink='null', namespace=namespace)
    overrides = graph.node_parameters(options, 'ws://127.0.0.1:9')[name]
    process = spawn([graph.executable(package, name), *graph.ros_args(
        namespace, PARAMS_FILE, overrides, 'warn')], name=name)

    client = AsyncParameterClient(ros_node, f'/{namespace}/{name}')
    assert client.wait_for_services(timeout_sec=30.0), \
        f'{name} offers no parameter services; its output:\n{process.output()}'
    declared = set(call(client.list_parameters()).result.names)
    expected = yaml_parameters()[name]

    unknown = sorted(set(expected) - declared)
    assert not unknown, f'muse.yaml sets parameters {name} does not declare: {unknown}'

    names = sorted(expected)
    values = call(client.get_parameters(names)).values
    for key, value in zip(names, values):
        want = overrides.get(key, expected[key])
        got = parameter_value_to_python(value)
        assert type(got) is type(want) and got == want, f'{name}.{key}: {got!r} != {want!r}'

    own = sorted(n for n in declared if n not in BUILT_IN and not n.startswith('qos_overrides.'))
    descriptors = call(client.describe_parameters(own)).descriptors
    undocumented = [d.name for d in descriptors if not d.description.strip()]
    assert not undocumented, f'{name} declares parameters without a description: {undocumented}'
    assert process.proc.poll() is None, f'{name} exited:\n{process.output()}'


def test_runner_rejects_a_missing_subject(tmp_path):
    import subprocess
    result = subprocess.run(
        [sys.executable, '-m', 'muse_bringup.run', '--subject', str(tmp_path / 'S99.pkl'),
         '--output-dir', str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert 'S99.pkl' in result.stderr and 'does not exist' in result.stderr, result.stderr
