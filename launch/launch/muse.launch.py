"""Start the whole MUSE graph on a real ROS 2 install.

    ros2 launch muse_bringup muse.launch.py                       # synthetic subject, local synth server
    ros2 launch muse_bringup muse.launch.py subject:=/data/PPG_FieldStudy/S1/S1.pkl rate:=1.0
    ros2 launch muse_bringup muse.launch.py server_url:=ws://gpu-box:8765 token:=$MUSE_SERVER_TOKEN
    ros2 launch muse_bringup muse.launch.py backend:=musicgen model:=facebook/musicgen-small

The same nodes, parameter file and per-node overrides as the runner (`muse_run`), built from
muse_bringup.graph so the two cannot drift apart. Every node is a managed (lifecycle) node;
`muse_lifecycle_manager` configures and activates them in order (the same manager the runner
uses). When the replay deactivates itself at the end of its data, the manager waits `tail_s`,
brings the graph down in reverse order (the recorder closes its bag last) and exits; then
`muse_report` writes timeline.png and metrics.json beside the bag and the stitched WAV, and
the launch shuts down. After Ctrl-C, run `ros2 run muse_bringup muse_report <session folder>`.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, ExecuteProcess, LogInfo,
                            OpaqueFunction, RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from muse_bringup import graph
from muse_bringup.session import (GRAPH_NODES, NAMESPACE, SERVER_EXECUTABLE, STOP_TIMEOUT_S,
                                  new_session_dir)

ARGUMENTS = (
    ('namespace', NAMESPACE, 'Namespace of every MUSE node and topic.'),
    ('subject', '', 'PPG-DaLiA subject .pkl, or a rosbag2 folder from muse_dalia_to_bag. '
                    'Empty: generate a synthetic subject into the session folder.'),
    ('synthetic_minutes', '12.0', 'Length of the generated synthetic subject [min].'),
    ('seed', '7', 'Seed of the generated synthetic subject.'),
    ('rate', '1.0', 'Replay speed (1.0 = real time).'),
    ('duration_s', '0.0', 'Replay only this much data [s] (0 = all).'),
    ('start_offset_s', '0.0', 'Skip this much data at the start of the subject [s].'),
    ('server_url', '', 'ws:// URL of a running music server. Empty: start a local server.'),
    ('token', os.environ.get(graph.TOKEN_ENV, ''),
     f'Server token (default ${graph.TOKEN_ENV}; random for a local server).'),
    ('backend', 'synth', 'Backend of the local server: synth or musicgen.'),
    ('model', 'facebook/musicgen-small', 'MusicGen hub id or local path (backend musicgen).'),
    ('style', 'chill_techno', 'Style preset of the prompt builder.'),
    ('sink', 'auto', 'Audio output: auto (speakers if present, else null), sounddevice, null.'),
    ('output_dir', 'out', 'Folder for session folders (WAV, bag, timeline.png, metrics.json).'),
    ('params_file', os.path.join(get_package_share_directory('muse_bringup'), 'config', 'muse.yaml'),
     'Parameter YAML for every node.'),
    ('log_level', 'info', 'Log level of every node.'),
    ('tail_s', '3.0', 'Keep playing this long after the replay ends [s].'),
)


def launch_setup(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    session = new_session_dir(arg['output_dir'])
    subject = arg['subject'] or str(graph.synthetic_subject(
        session, float(arg['synthetic_minutes']), int(arg['seed'])))
    options = graph.GraphOptions(
        subject=subject, session=session, rate=float(arg['rate']),
        duration_s=float(arg['duration_s']), start_offset_s=float(arg['start_offset_s']),
        server_url=arg['server_url'], backend=arg['backend'], model=arg['model'],
        style=arg['style'], sink=arg['sink'], log_level=arg['log_level'],
        namespace=arg['namespace'], token=graph.session_token(arg['token']))
    options.validate()

    actions = [LogInfo(msg=f'MUSE session folder: {session.root}')]
    server_url = options.server_url
    if not server_url:
        server_args, server_env, server_url = graph.local_server(options, graph.free_port())
        actions.append(ExecuteProcess(
            cmd=[str(graph.executable(*SERVER_EXECUTABLE)), *server_args], name='music_server',
            additional_env=server_env, output='screen', sigterm_timeout='10'))

    overrides = graph.node_parameters(options, server_url)
    for package, name in GRAPH_NODES:
        actions.append(LifecycleNode(
            package=package, executable=name, name=name, namespace=options.namespace,
            output='screen', parameters=[arg['params_file'], overrides[name]],
            arguments=['--ros-args', '--log-level', options.log_level],
            sigterm_timeout=str(STOP_TIMEOUT_S.get(name, 5))))
    manager = Node(
        package='muse_bringup', executable='muse_lifecycle_manager', name='lifecycle_manager',
        namespace=options.namespace, output='screen',
        parameters=[{'node_names': [name for _, name in GRAPH_NODES],
                     'end_with': 'sensor_replay', 'tail_s': float(arg['tail_s'])}],
        arguments=['--ros-args', '--log-level', options.log_level])
    report = ExecuteProcess(
        cmd=[str(graph.executable('muse_bringup', 'muse_report')), str(session.root)],
        name='muse_report', output='screen')
    actions += [
        manager,
        # The manager exits once the graph is down (bag closed): write the report, then stop.
        RegisterEventHandler(OnProcessExit(target_action=manager, on_exit=[
            LogInfo(msg='graph down; writing the session report'), report])),
        RegisterEventHandler(OnProcessExit(target_action=report, on_exit=[
            EmitEvent(event=Shutdown(reason='session finished'))])),
    ]
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)])
