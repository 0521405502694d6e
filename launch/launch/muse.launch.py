"""Start the whole MUSE graph on a real ROS 2 install.

    ros2 launch muse_bringup muse.launch.py                       # synthetic subject, local synth server
    ros2 launch muse_bringup muse.launch.py subject:=/data/PPG_FieldStudy/S1/S1.pkl rate:=1.0
    MUSE_SERVER_TOKEN=... ros2 launch muse_bringup muse.launch.py server_url:=ws://gpu-box:8765
    ros2 launch muse_bringup muse.launch.py backend:=musicgen model:=facebook/musicgen-small

The same nodes, parameter file and per-node overrides as the runner (`muse_run`), built from
muse_bringup.graph so the two cannot drift apart. Every node is a managed (lifecycle) node;
`muse_lifecycle_manager` configures and activates them in order (the same manager the runner
uses). When the replay deactivates itself at the end of its data, the manager waits `tail_s`,
brings the graph down in reverse order (the recorder closes its bag last) and exits; then
`muse_report` writes timeline.png and metrics.json beside the bag and the stitched WAV, and
the launch shuts down. After Ctrl-C, run `ros2 run muse_bringup muse_report <session folder>`.
A replay that fails (bad data, a crash) ends its process with a non-zero code, which ends the
launch at once, as a failure (non-zero exit). A crashed player or encoder is respawned (the
lifecycle manager brings it up again).

The graph runs on a ROS domain of its own: $ROS_DOMAIN_ID when set, else a free one held for
the launch's life (muse_common.domain). The server token never is a launch argument (``-s``
would print it, launch_ros would write it into a parameter file): it comes from
$MUSE_SERVER_TOKEN or ``token_file`` and reaches the server and bridge in their environment.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, ExecuteProcess, LogInfo,
                            OpaqueFunction, RegisterEventHandler, SetEnvironmentVariable)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from muse_bringup import graph
from muse_bringup.session import (GRAPH_NODES, MAX_RESPAWNS, NAMESPACE, RESPAWN_DELAY_S,
                                  RESPAWNED_NODES, SERVER_EXECUTABLE, STOP_TIMEOUT_S,
                                  new_session_dir)
from muse_common.domain import DOMAIN_ENV, claim_domain

# The domain lease of this launch, held until the launch process exits.
_LEASES = []

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
    ('token_file', '', f'File holding the server token, mode 0600 (default ${graph.TOKEN_ENV}; '
                       'random for a local server). The token itself is never an argument.'),
    ('use_sim_time', 'true', 'Run every node on the /clock the replay publishes, so that every '
                             'dwell and hold is data time whatever the rate.'),
    ('backend', 'synth', 'Backend of the local server: synth or musicgen.'),
    ('model', 'facebook/musicgen-small', 'MusicGen hub id or local path (backend musicgen).'),
    ('retarget', 'false', 'Local server: steer the running music at a prompt change even where '
     'it cannot fork it (heard after the audio already sent, ~1-2.5 s) instead of crossfading '
     'to a new stream at once.'),
    ('fork', 'true', 'Local server: at a prompt change fork the running synth music just ahead '
     'of the listener (heard within a beat, no new piece).'),
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
    if arg['subject']:  # a missing or unreadable subject fails before the session folder
        graph.check_subject(arg['subject'], float(arg['start_offset_s']),
                            float(arg['duration_s']))
    token = graph.session_token(arg['token_file'])
    lease = claim_domain()
    _LEASES.append(lease)
    session = new_session_dir(arg['output_dir'])
    subject = arg['subject'] or str(graph.synthetic_subject(
        session, float(arg['synthetic_minutes']), int(arg['seed'])))
    options = graph.GraphOptions(
        subject=subject, session=session, rate=float(arg['rate']),
        duration_s=float(arg['duration_s']), start_offset_s=float(arg['start_offset_s']),
        server_url=arg['server_url'], backend=arg['backend'], model=arg['model'],
        retarget=arg['retarget'].lower() in ('true', '1', 'yes'),
        fork=arg['fork'].lower() in ('true', '1', 'yes'),
        style=arg['style'], sink=arg['sink'], log_level=arg['log_level'],
        namespace=arg['namespace'], token=token,
        use_sim_time=arg['use_sim_time'].lower() in ('true', '1', 'yes'))
    options.validate()

    actions = [SetEnvironmentVariable(DOMAIN_ENV, str(lease.domain_id)),
               LogInfo(msg=f'MUSE session folder: {session.root}; ROS domain '
                           f'{lease.domain_id}')]
    if lease.shared_with:
        actions.append(LogInfo(msg=f'warning: ROS domain {lease.domain_id} is also held by '
                                   f'another MUSE session ({lease.shared_with})'))
    server_url = options.server_url
    if not server_url:
        server_args, server_env, server_url = graph.local_server(options, graph.free_port())
        actions.append(ExecuteProcess(
            cmd=[str(graph.executable(*SERVER_EXECUTABLE)), *server_args], name='music_server',
            additional_env=server_env, output='screen', sigterm_timeout='10'))

    overrides = graph.node_parameters(options, server_url)
    replay = None
    for package, name in GRAPH_NODES:
        node = LifecycleNode(
            package=package, executable=name, name=name, namespace=options.namespace,
            output='screen', parameters=[arg['params_file'], overrides[name]],
            arguments=['--ros-args', '--log-level', options.log_level],
            sigterm_timeout=str(STOP_TIMEOUT_S.get(name, 5)),
            additional_env=graph.secret_env(options) if name == 'cloud_bridge' else None,
            respawn=name in RESPAWNED_NODES, respawn_delay=RESPAWN_DELAY_S,
            respawn_max_retries=MAX_RESPAWNS)
        replay = node if name == 'sensor_replay' else replay
        actions.append(node)
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
        RegisterEventHandler(OnProcessExit(target_action=replay, on_exit=replay_exited)),
    ]
    return actions


def replay_exited(event, context):
    """The replay's process ends only with the session, or when it failed (non-zero): then
    end the launch at once, as a failure."""
    if event.returncode == 0 or context.is_shutdown:
        return None
    reason = f'sensor_replay failed with exit code {event.returncode}; see its log above'

    def fail(_context):
        # An exception in a launch action makes `ros2 launch` shut everything down and exit
        # with a non-zero code; a Shutdown event alone would end it with 0.
        raise RuntimeError(reason)

    return [LogInfo(msg=f'error: {reason}'), EmitEvent(event=Shutdown(reason=reason)),
            OpaqueFunction(function=fail)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)])
