"""The prompt_builder node in its own process: estimates in, latched prompts out."""

import sys
import textwrap
import time

import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from muse_common import qos, topics
from muse_msgs.msg import ActivityEstimate, HeartRate, MusicPrompt, UserProfile
from muse_msgs.srv import OverridePrompt
from muse_common.activities import ACTIVITY_NAMES

NAMESPACE = '/muse'
TIMEOUT = 60.0
BASE_SEC = 1000
# Reads the latched prompt topic keeping every prompt: a depth-1 reader keeps only the newest
# of prompts that arrive faster than it takes them.
ALL_PROMPTS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def absolute(name):
    return name if name.startswith('/') else f'{NAMESPACE}/{name}'


def stamp(seconds):
    """Data-time stamps with a fraction, so exact round trips are checked."""
    return Time(sec=BASE_SEC + seconds, nanosec=250_000_000)


def start_node(spawn, *parameters):
    args = [sys.executable, '-m', 'muse_prompt.prompt_builder_node', '--ros-args',
            '-r', f'__ns:={NAMESPACE}', '-p', 'autostart:=true', '-p', 'min_dwell_s:=4.0',
            '-p', 'min_confidence:=0.6']
    for parameter in parameters:
        args += ['-p', parameter]
    return spawn(args, name='prompt_builder')


def diagnostic_values(collector, name):
    """Key/values of the latest status called ``prompt_builder: <name>``."""
    for array in reversed(collector.messages(topics.DIAGNOSTICS)):
        for status in array.status:
            if status.name == f'prompt_builder: {name}':
                return {kv.key: kv.value for kv in status.values}
    return {}


class Graph:
    """Publishers standing in for the replay and encoder nodes."""

    def __init__(self, node):
        self.activity = node.create_publisher(ActivityEstimate, absolute(topics.ACTIVITY),
                                              qos.EVENTS)
        self.heart_rate = node.create_publisher(HeartRate, absolute(topics.HEART_RATE),
                                                qos.SENSOR)
        self.profile = node.create_publisher(UserProfile, absolute(topics.USER_PROFILE),
                                             qos.LATCHED)
        self.override = node.create_client(OverridePrompt,
                                           f'{NAMESPACE}/prompt_builder/override_prompt')

    def connected(self):
        return all(p.get_subscription_count() > 0
                   for p in (self.activity, self.heart_rate, self.profile)) \
            and self.override.service_is_ready()

    def override_prompt(self, wait_until, **fields):
        future = self.override.call_async(OverridePrompt.Request(**fields))
        wait_until(future.done, TIMEOUT, f'an answer to the override {fields}')
        return future.result()

    def estimate(self, seconds, name, confidence):
        class_id = ACTIVITY_NAMES.index(name)
        probabilities = [0.0] * len(ACTIVITY_NAMES)
        probabilities[class_id] = confidence
        msg = ActivityEstimate(class_id=class_id, label=name, confidence=confidence,
                               raw_class_id=class_id, probabilities=probabilities,
                               window_start=stamp(seconds - 8))
        msg.header.stamp = stamp(seconds)
        msg.header.frame_id = 'wrist'
        self.activity.publish(msg)


@pytest.fixture
def set_parameter(ros_node, wait_until):
    """``set_parameter(name, value)`` sets a string parameter of the node; returns the result."""
    def set_one(name, value):
        client = ros_node.create_client(SetParameters,
                                        f'{NAMESPACE}/prompt_builder/set_parameters')
        assert client.wait_for_service(timeout_sec=TIMEOUT)
        request = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=value))])
        future = client.call_async(request)
        wait_until(future.done, TIMEOUT, f'an answer to setting {name}')
        return future.result().results[0]
    return set_one


def test_node_turns_flapping_estimates_into_latched_prompts(spawn, collector, ros_node,
                                                           wait_until, set_parameter):
    prompt_topic = absolute(topics.PROMPT)
    collector.subscribe(MusicPrompt, prompt_topic, ALL_PROMPTS)
    collector.subscribe(DiagnosticArray, topics.DIAGNOSTICS, 10)
    graph = Graph(ros_node)
    node = start_node(spawn)
    wait_until(graph.connected, TIMEOUT, 'the node to subscribe', node)

    graph.profile.publish(UserProfile(user_id='S1', age=34, sex=UserProfile.SEX_MALE,
                                      height_cm=182.3, weight_kg=77.9))
    # heart rate is best effort: repeat it until the node reports having it
    for attempt in range(600):
        msg = HeartRate(bpm=64.4, confidence=1.0, source=HeartRate.SOURCE_SYNTHETIC)
        msg.header.stamp = stamp(0)
        graph.heart_rate.publish(msg)
        values = diagnostic_values(collector, 'inputs')
        if int(values.get('heart_rates', 0)) > 0 and int(values.get('profiles', 0)) > 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f'the node never reported heart rate and profile:\n{node.output()}')

    # working, flaps to walking and back, walking for real (held 6 -> 10 s), one
    # low-confidence sitting, then working for real (held 12 -> 16 s)
    for seconds, name, confidence in [
            (0, 'working', 0.9), (2, 'walking', 0.9), (4, 'working', 0.9), (6, 'walking', 0.9),
            (8, 'walking', 0.8), (9, 'sitting', 0.3), (10, 'walking', 0.9),
            (12, 'working', 0.9), (14, 'working', 0.95), (16, 'working', 0.9)]:
        graph.estimate(seconds, name, confidence)
        time.sleep(0.1)  # the encoder's stride is 2 s; the latched writer keeps one prompt
    prompts = collector.wait_for(prompt_topic, 3, timeout=TIMEOUT)
    assert [p.prompt_id for p in prompts] == [1, 2, 3], node.output()
    assert [p.reason for p in prompts] == [MusicPrompt.REASON_INITIAL,
                                           MusicPrompt.REASON_ACTIVITY_CHANGE,
                                           MusicPrompt.REASON_ACTIVITY_CHANGE]
    assert [p.activity for p in prompts] == ['working', 'walking', 'working']
    assert [(p.trigger_stamp.sec, p.trigger_stamp.nanosec) for p in prompts] == [
        (BASE_SEC, 250_000_000), (BASE_SEC + 10, 250_000_000), (BASE_SEC + 16, 250_000_000)]
    first = prompts[0]
    assert first.text.startswith(
        'Chill techno music. Current activity: Working at Desk. The listener is 34 years old, '
        '182 cm tall, and weighs 78.0 kg. Heart rate is 65 bpm. Tempo: 84 BPM, calm energy.')
    assert (first.style, first.activity_class_id, first.heart_rate_bpm, first.target_bpm) == (
        'chill_techno', ActivityEstimate.WORKING, 65.0, 84.0)
    assert abs(first.energy - 0.3) < 1e-6
    assert prompts[1].target_bpm == 100.0  # walking at 65 bpm: 112 + 0.5 * (65 - 100) -> 100

    # manual text, then clear
    answer = graph.override_prompt(wait_until, text='Solo piano, slow and gentle.')
    assert (answer.accepted, answer.reason, answer.prompt_id) == (True, '', 4)
    refused = graph.override_prompt(wait_until, style='polka')
    assert not refused.accepted and "unknown style preset 'polka'" in refused.reason
    assert refused.prompt_id == 0
    assert graph.override_prompt(wait_until, clear=True).prompt_id == 5
    prompts = collector.wait_for(prompt_topic, 5, timeout=TIMEOUT)
    assert [(p.prompt_id, p.reason) for p in prompts[3:]] == [
        (4, MusicPrompt.REASON_MANUAL), (5, MusicPrompt.REASON_MANUAL)], node.output()
    assert prompts[3].text == 'Solo piano, slow and gentle.'
    assert prompts[4].text == prompts[2].text

    # style as a parameter, validated at runtime
    refused = set_parameter('style', 'polka')
    assert not refused.successful and "unknown style preset 'polka'" in refused.reason
    accepted = set_parameter('style', 'jazz')
    assert accepted.successful, accepted.reason
    prompts = collector.wait_for(prompt_topic, 6, timeout=TIMEOUT)
    assert len(prompts) == 6, node.output()
    assert (prompts[5].prompt_id, prompts[5].style) == (6, 'jazz')
    assert prompts[5].text.startswith('Smooth jazz music.')

    # a late subscriber gets the current prompt (latched), and only that
    late = []
    ros_node.create_subscription(MusicPrompt, prompt_topic, late.append, qos.LATCHED)
    wait_until(lambda: late, TIMEOUT, 'the latched prompt', node)
    time.sleep(0.5)
    assert [p.prompt_id for p in late] == [6]

    wait_until(lambda: diagnostic_values(collector, 'decision').get('prompts') == '6',
               TIMEOUT, 'diagnostics to count 6 prompts', node)
    decision = diagnostic_values(collector, 'decision')
    assert (decision['activity'], decision['style'], decision['last_reason']) == (
        'working', 'jazz', 'manual')
    assert node.stop() == 0, node.output()


def test_node_uses_a_user_presets_file(spawn, collector, ros_node, tmp_path, wait_until,
                                       set_parameter):
    presets = tmp_path / 'mine.yaml'
    presets.write_text(textwrap.dedent("""\
        presets:
          dark_techno:
            extends: chill_techno
            genre: Dark techno
            include_physiology: false
            include_heart_rate: false
    """))
    prompt_topic = absolute(topics.PROMPT)
    collector.subscribe(MusicPrompt, prompt_topic, ALL_PROMPTS)
    graph = Graph(ros_node)
    node = start_node(spawn, f'presets_file:={presets}', 'style:=dark_techno')
    wait_until(graph.connected, TIMEOUT, 'the node to subscribe', node)
    graph.estimate(0, 'cycling', 0.99)
    prompts = collector.wait_for(prompt_topic, 1, timeout=TIMEOUT)
    assert len(prompts) == 1, node.output()
    assert prompts[0].style == 'dark_techno'
    assert prompts[0].text.startswith('Dark techno music. Current activity: Cycling. Tempo: '
                                      '128 BPM, lively energy.')

    # at runtime a broken file is refused, naming the key, and the presets in use stay
    broken = tmp_path / 'broken.yaml'
    broken.write_text('presets:\n  dark_techno: {extends: jazz, moood: grim}\n')
    refused = set_parameter('presets_file', str(broken))
    assert not refused.successful
    assert f"presets file '{broken}': presets.dark_techno.moood: unknown key" in refused.reason
    # a file without the style in use is refused too
    other = tmp_path / 'other.yaml'
    other.write_text('presets:\n  bebop: {extends: jazz, genre: Bebop}\n')
    refused = set_parameter('presets_file', str(other))
    assert not refused.successful and "'dark_techno'" in refused.reason
    # a good file that redefines the style in use changes the music at once
    presets.write_text(presets.read_text().replace('Dark techno', 'Industrial techno'))
    accepted = set_parameter('presets_file', str(presets))
    assert accepted.successful, accepted.reason
    prompts = collector.wait_for(prompt_topic, 2, timeout=TIMEOUT)
    assert [p.prompt_id for p in prompts] == [1, 2], node.output()
    assert prompts[1].reason == MusicPrompt.REASON_MANUAL
    assert prompts[1].text.startswith('Industrial techno music. Current activity: Cycling.')
    assert node.stop() == 0, node.output()


def test_node_refuses_a_bad_presets_file_naming_the_key(spawn, tmp_path):
    presets = tmp_path / 'broken.yaml'
    presets.write_text('presets:\n  mine: {extends: jazz, energy: {walking: 2.0}}\n')
    node = start_node(spawn, f'presets_file:={presets}')
    code = node.wait(timeout=TIMEOUT)
    output = node.output()
    assert code != 0, output
    assert f"presets file '{presets}': presets.mine.energy.walking" in output, output
    assert 'expected a number in [0, 1]' in output, output


def test_node_refuses_an_unknown_style_at_start(spawn):
    node = start_node(spawn, 'style:=polka')
    code = node.wait(timeout=TIMEOUT)
    output = node.output()
    assert code != 0, output
    assert "parameter 'style' of node 'prompt_builder' is 'polka'; expected one of" in output
