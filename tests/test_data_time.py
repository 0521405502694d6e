"""One clock: with use_sim_time the replay drives /clock, the encoder stamps each estimate with
its window's data time, and the prompt builder's dwell and zone hold count data time, so the
same subject makes the same prompt decisions whatever the replay rate.

replay -> encoder -> prompt builder, each its own process, at two rates (default 2 and 8; set
MUSE_DATA_TIME_RATES=1,8 for the real-time comparison, ~3 minutes). The sensor topics are made
reliable with a deep history here so that a starved machine cannot lose a sample: a lost IMU
sample shifts every later window, which is a different input, not a different clock.
"""

import os
import sys

import pytest
from muse_bringup import graph
from muse_bringup.session import SessionPaths

from muse_common import qos, stamps

pytestmark = pytest.mark.slow

MINUTES = 2.5
RATES = [float(r) for r in os.environ.get('MUSE_DATA_TIME_RATES', '2,8').split(',')]
NODES = (('muse_encoder', 'activity_encoder'), ('muse_prompt', 'prompt_builder'))
RELIABLE = {'reliability': 'reliable', 'depth': 5000}


def qos_overrides(topic, side):
    return {f'qos_overrides./muse/{topic}.{side}.{policy}': value
            for policy, value in RELIABLE.items()}


def run_at(rate, subject, tmp_path, spawn, ros_node, collector, wait_until):
    """Prompts, estimates and the data-time origin of one replay of ``subject`` at ``rate``."""
    options = graph.GraphOptions(subject=str(subject), session=SessionPaths(tmp_path),
                                 rate=rate, sink='null', use_sim_time=True)
    overrides = graph.node_parameters(options, 'ws://127.0.0.1:9')
    overrides['activity_encoder'].update(qos_overrides('imu', 'subscription'),
                                         **qos_overrides('heart_rate', 'subscription'))
    overrides['prompt_builder'].update(qos_overrides('heart_rate', 'subscription'))
    overrides['sensor_replay'].update(qos_overrides('imu', 'publisher'),
                                      **qos_overrides('heart_rate', 'publisher'))
    from ament_index_python.packages import get_package_share_directory
    from muse_common.lifecycle import LifecycleClient
    params_file = os.path.join(get_package_share_directory('muse_bringup'), 'config',
                               'muse.yaml')
    processes, clients = {}, {}
    for package, name in NODES + (('muse_sensors', 'sensor_replay'),):
        processes[name] = spawn([graph.executable(package, name), *graph.ros_args(
            'muse', params_file, overrides[name], 'info')], name=f'{name}-{rate:g}')
        clients[name] = LifecycleClient(ros_node, f'/muse/{name}', 60.0)
    # Configure all, wait until the replay's publishers and the consumers' subscriptions know
    # each other (no sample may be lost at the start), then activate, the replay last.
    for name, client in clients.items():
        # Asked until this process answers: the previous run's node of the same name may still
        # be in the graph, and a request sent before the new service is matched is lost.
        probe = LifecycleClient(ros_node, f'/muse/{name}', 2.0)

        def answers(probe=probe):
            try:
                return probe.wait_for_service(0.5) and probe.get_state() == 'unconfigured'
            except TimeoutError:
                return False
        wait_until(answers, 120.0, f'{name} answering get_state', processes[name])
        assert client.change_state('configure'), processes[name].output()
    for topic, readers in (('/muse/imu', 1), ('/muse/heart_rate', 2)):
        wait_until(lambda: len(ros_node.get_publishers_info_by_topic(topic)) == 1 and len(
            ros_node.get_subscriptions_info_by_topic(topic)) >= readers, 60.0,
            f'the publisher and subscriptions of {topic}')
    for name, client in clients.items():
        assert client.change_state('activate'), processes[name].output()
    replay = processes['sensor_replay']
    wait_until(lambda: 'end of data' in replay.output(), MINUTES * 60 / rate + 120,
               'the end of the data', replay)

    def diagnostics_value(status_name, key):
        for array in reversed(collector.messages('/diagnostics')):
            for status in array.status:
                if status.name == status_name:
                    values = {kv.key: kv.value for kv in status.values}
                    if key in values:
                        return int(values[key])
        return None

    def all_estimates_decided():
        published = diagnostics_value('activity_encoder: inference', 'windows_published')
        decided = diagnostics_value('prompt_builder: inputs', 'estimates')
        return published and published == decided == len(
            collector.messages('/muse/activity'))
    wait_until(all_estimates_decided, 120.0, 'every estimate published, received and decided')
    for process in processes.values():
        process.stop()
    origin = stamps.to_sec(collector.messages('/muse/user_profile')[0].header.stamp)
    prompts = collector.messages('/muse/prompt')
    estimates = collector.messages('/muse/activity')
    return prompts, estimates, origin


def decisions(prompts, origin):
    """What was decided and when, in data seconds: (data time of the trigger, reason,
    activity), in trigger order."""
    return sorted((round(stamps.to_sec(p.trigger_stamp) - origin, 3), p.reason,
                   p.activity_class_id) for p in prompts)


def test_the_same_subject_makes_the_same_decisions_at_two_rates(tmp_path_factory, spawn,
                                                                ros_node, collector,
                                                                wait_until):
    from diagnostic_msgs.msg import DiagnosticArray
    from muse_msgs.msg import ActivityEstimate, MusicPrompt, UserProfile
    from muse_sensors.synthetic import write_subject
    subject = write_subject(tmp_path_factory.mktemp('subject'), 1, MINUTES, seed=4)
    results = {}
    for rate in RATES:
        collector = type(collector)(ros_node)
        collector.subscribe(MusicPrompt, '/muse/prompt', qos.EVENTS)
        collector.subscribe(ActivityEstimate, '/muse/activity', qos.EVENTS)
        collector.subscribe(UserProfile, '/muse/user_profile', qos.LATCHED)
        collector.subscribe(DiagnosticArray, '/diagnostics', qos.EVENTS)
        prompts, estimates, origin = run_at(rate, subject, tmp_path_factory.mktemp('run'),
                                               spawn, ros_node, collector, wait_until)
        results[rate] = (prompts, estimates, origin)
        sys.stdout.write(f'rate {rate:g}: {len(estimates)} estimates, {len(prompts)} prompts: '
                         f'{decisions(prompts, origin)}\n')
    (slow, slow_estimates, slow_origin), (fast, fast_estimates, fast_origin) = \
        results[RATES[0]], results[RATES[-1]]
    # The windows at the same data times, with the same classes. On a starved machine the
    # encoder may drop a window its inference could not keep up with (counted in its
    # diagnostics), which is load, not the clock: the windows both runs have must agree.
    def windows(estimates, origin):
        return {round(stamps.to_sec(e.header.stamp) - origin, 3): e.class_id for e in estimates}
    slow_windows = windows(slow_estimates, slow_origin)
    fast_windows = windows(fast_estimates, fast_origin)
    both = slow_windows.keys() & fast_windows.keys()
    assert len(both) >= MINUTES * 60 / 2 - 5, (sorted(slow_windows), sorted(fast_windows))
    assert {t: slow_windows[t] for t in both} == {t: fast_windows[t] for t in both}
    # The same prompts, triggered at the same data times.
    assert decisions(slow, slow_origin) == decisions(fast, fast_origin)
    assert len({p.activity_class_id for p in slow}) >= 3, decisions(slow, slow_origin)
