"""The package layout holds (docs/ARCHITECTURE.md): what each package and module may import.

Imports are read from the source with ``ast`` and followed through the repository's own
modules, so a plain module that imports a repository module that imports rclpy fails too.
What counts is what importing a module needs: statements at module level (also under ``if``
and ``try``, and in class bodies), not imports deferred into functions (muse_common.stamps'
``from_sec`` makes an rclpy Time; its ``to_sec`` serves the plain report).
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Python package -> its source folder.
PACKAGES = {
    'muse_common': REPO / 'muse_common' / 'muse_common',
    'muse_protocol': REPO / 'muse_protocol' / 'muse_protocol',
    'muse_server': REPO / 'muse_server' / 'muse_server',
    'muse_sensors': REPO / 'muse_sensors' / 'muse_sensors',
    'muse_encoder': REPO / 'muse_encoder' / 'muse_encoder',
    'muse_prompt': REPO / 'muse_prompt' / 'muse_prompt',
    'muse_cloud_bridge': REPO / 'muse_cloud_bridge' / 'muse_cloud_bridge',
    'muse_player': REPO / 'muse_player' / 'muse_player',
    'muse_bringup': REPO / 'launch' / 'muse_bringup',
}

# Modules that must run without ROS: no rclpy, no generated interfaces, not even through
# another repository module. Whole packages first, then the science modules of the ROS
# packages. Every module of those packages must be named here or in ROS_ADAPTERS.
ROS_FREE_PACKAGES = ('muse_protocol', 'muse_server')
ROS_FREE = {
    'muse_common': ('activities', 'profile', 'stats', 'stamps', 'topics', 'rosbag_types',
                    'domain', 'crosstalk', 'token_file'),
    'muse_sensors': ('dalia', 'synthetic', 'replay', 'plots'),
    'muse_encoder': ('features', 'model', 'dataset', 'train', 'inference', 'statics',
                     'checkpoint', 'export', 'metrics', 'plots', 'stream', 'onnx_model',
                     'evaluate', 'reaction', 'dsp', 'calibrate'),
    'muse_prompt': ('decision', 'template', 'tempo', 'presets', 'heart_zones', 'preview',
                    'plots'),
    'muse_player': ('jitter_buffer', 'mixer', 'pcm', 'sinks', 'wav_recorder', 'player',
                    'events'),
    'muse_bringup': ('lifecycle_plan', 'session', 'graph', 'recorder_queue'),
}
# The ROS side: nodes and node plumbing (allowed to import rclpy and messages).
ROS_ADAPTERS = {
    'muse_common': ('diagnostics', 'lifecycle', 'node_main', 'params', 'qos'),
    'muse_sensors': ('sensor_replay_node', 'bag'),   # bag: QoS profiles of the recorded topics
    'muse_encoder': ('activity_encoder_node',),
    'muse_prompt': ('prompt_builder_node',),
    'muse_player': ('audio_player_node',),
    # The report's parts are plain but for muse_msgs' constants (and the bag's message types).
    'muse_bringup': ('lifecycle_manager', 'runner', 'run', 'session_recorder_node', 'report',
                     'session_data', 'metrics', 'timeline'),
}
# Packages that may not be imported at all from a given package.
FORBIDDEN = {
    'muse_server': ('muse_cloud_bridge', 'muse_common', 'muse_sensors', 'muse_encoder',
                    'muse_prompt', 'muse_player', 'muse_bringup', 'muse_msgs'),
    'muse_protocol': ('muse_server', 'muse_common', 'muse_cloud_bridge', 'muse_msgs'),
}


def is_ros(name):
    """rclpy, launch and every generated interface package (``*_msgs``, ``*_srvs``,
    ``*_interfaces``, e.g. muse_msgs, sensor_msgs, builtin_interfaces)."""
    top = name.split('.')[0]
    return (top in ('rclpy', 'launch', 'launch_ros', 'rosidl_runtime_py')
            or top.endswith(('_msgs', '_srvs', '_interfaces')))


def module_files():
    """``{'muse_sensors.dalia': Path, ...}`` for every module of the repository packages."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob('*.py'):
            parts = path.relative_to(folder).with_suffix('').parts
            if parts[-1] == '__init__':
                parts = parts[:-1]
            found['.'.join((package,) + parts)] = path
    return found


MODULES = module_files()


def _import_time_nodes(tree):
    """Every node executed when the module is imported: all but function bodies."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                todo.append(child)


def direct_imports(module):
    """Names importing ``module`` imports, resolved to repository modules where they name
    one."""
    path = MODULES[module]
    names = set()
    for node in _import_time_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:       # relative import
                base = module.split('.')[:-node.level + (1 if path.name == '__init__.py' else 0)
                                         or None]
                stem = '.'.join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            names.add(stem)
            names.update(f'{stem}.{alias.name}' for alias in node.names
                         if f'{stem}.{alias.name}' in MODULES)
    return names


def reachable_imports(module):
    """Everything ``module`` imports, following repository modules; ``{name: via}``."""
    seen, result, todo = {module}, {}, [(module, module)]
    while todo:
        current, via = todo.pop()
        for name in direct_imports(current):
            result.setdefault(name, via)
            if name in MODULES and name not in seen:
                seen.add(name)
                todo.append((name, f'{via} -> {name}'))
    return result


def ros_free_modules():
    modules = [m for m in MODULES if m.split('.')[0] in ROS_FREE_PACKAGES]
    modules += [f'{package}.{name}' for package, names in ROS_FREE.items() for name in names]
    return sorted(modules)


@pytest.mark.parametrize('module', ros_free_modules())
def test_ros_free_module_imports_no_ros(module):
    assert module in MODULES, f'{module} is listed as ROS-free but does not exist'
    offending = {name: via for name, via in reachable_imports(module).items() if is_ros(name)}
    assert not offending, f'{module} must run without ROS but imports ' + ', '.join(
        f'{name} (via {via})' for name, via in sorted(offending.items()))


@pytest.mark.parametrize('package', sorted(FORBIDDEN))
def test_package_does_not_import_forbidden_packages(package):
    bad = []
    for module in (m for m in MODULES if m.split('.')[0] == package):
        for name, via in reachable_imports(module).items():
            if name.split('.')[0] in FORBIDDEN[package]:
                bad.append(f'{name} (via {via})')
    assert not bad, f'{package} must not import {FORBIDDEN[package]}: {sorted(bad)}'


def test_every_module_of_the_ros_packages_is_classified():
    classified = {f'{p}.{n}' for table in (ROS_FREE, ROS_ADAPTERS) for p, names in table.items()
                  for n in names}
    packages = set(ROS_FREE) | set(ROS_ADAPTERS)
    unclassified = sorted(m for m in MODULES if m.split('.')[0] in packages and '.' in m
                          and m not in classified)
    assert not unclassified, (f'say whether these are plain (ROS_FREE) or ROS adapters '
                              f'(ROS_ADAPTERS) in tests/test_layout.py: {unclassified}')


def test_the_checker_sees_a_violation():
    # The checker itself: a ROS adapter is found to import rclpy and messages.
    names = reachable_imports('muse_sensors.sensor_replay_node')
    assert 'rclpy.qos' in names and is_ros('muse_msgs.msg') and is_ros('builtin_interfaces.msg')
    assert 'muse_common.lifecycle' in names and not is_ros('muse_common.activities')
