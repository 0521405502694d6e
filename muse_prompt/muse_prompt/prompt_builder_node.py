"""ROS adapter of the prompt builder: activity estimates, heart rate and profile in, manual
overrides through the ``~/override_prompt`` service (muse_msgs/srv/OverridePrompt); a latched
MusicPrompt out whenever ``decision.PromptDecider`` says the music should change.

Lifecycle: configure loads the presets and makes the decider, publisher and subscriptions;
prompts are published only while active (upstream nodes are activated after this one, so
nothing is decided before); cleanup drops them."""

import math
import statistics
import time
from collections import deque
from dataclasses import fields, replace

from rcl_interfaces.msg import SetParametersResult
from rclpy.time import Time

from muse_common import diagnostics, params, qos, topics
from muse_common.lifecycle import ManagedNode
from muse_common.node_main import run_node
from muse_msgs.msg import ActivityEstimate, HeartRate, MusicPrompt, UserProfile
from muse_msgs.srv import OverridePrompt
from muse_prompt.decision import DecisionConfig, PromptDecider
from muse_prompt.presets import DEFAULT_STYLE, PresetError, UnknownStyleError, load_library
from muse_common.profile import Profile

_CONFIG_DESCRIPTIONS = {
    'min_dwell_s': 'A new activity must be estimated confidently without interruption for this '
                   'long (estimate header stamps) before the music follows it [s].',
    'min_confidence': 'Activity estimates below this confidence are ignored [0, 1].',
    'hr_zone_margin_bpm': 'Hysteresis margin: the heart rate must pass a zone boundary by this '
                          'much to leave its zone [beats/min].',
    'hr_zone_dwell_s': 'The heart rate must stay out of its zone this long (heart-rate header '
                       'stamps) before a zone change makes a prompt [s].',
    'min_hr_confidence': 'Heart rates below this confidence are ignored [0, 1].',
    'include_physiology': 'Put the listener\'s body data (age, height, weight, heart rate) in '
                          'the text where the preset does; false keeps it out of every prompt.',
    'max_prompt_chars': 'Prompt length budget [characters]; optional sentences are dropped to '
                        'meet it (MusicGen\'s T5 text encoder truncates long prompts).',
}
_CONFIG_NAMES = tuple(f.name for f in fields(DecisionConfig))
_STALE_AFTER_S = 10.0
_LATENCY_WINDOW = 200


def stamp_ns(stamp):
    return Time.from_msg(stamp).nanoseconds


class PromptBuilderNode(ManagedNode):
    """Subscribes to activity, heart rate, profile and overrides; publishes MusicPrompt.

    Every callback (subscriptions, parameters, diagnostics) runs in the node's default,
    mutually exclusive callback group, so the decider sees one message at a time; a decision
    takes microseconds, so nothing waits behind it.
    """

    def __init__(self):
        super().__init__('prompt_builder')
        presets_file = params.declare(
            self, 'presets_file', '',
            'YAML file of your own style presets, added to (or replacing) the built-ins; '
            'empty = built-ins only. See muse_prompt/README.md.')
        # The style's choices are the presets' names, so the library is read here, before the
        # style parameter is declared; a bad file stops the node at once.
        try:
            self._library = load_library(presets_file or None)
        except PresetError as exc:
            self.get_logger().fatal(str(exc))
            raise
        params.declare(self, 'style', DEFAULT_STYLE, 'Style preset of the prompts.',
                       choices=self._library.names)
        defaults = DecisionConfig()
        for name in _CONFIG_NAMES:
            low, high = DecisionConfig.LIMITS.get(name, (None, None))
            params.declare(self, name, getattr(defaults, name), _CONFIG_DESCRIPTIONS[name],
                           min_value=low, max_value=high)
        self._decider = None
        self._diagnostics = None
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    def configure(self):
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        self._errors = 0
        self._last_error = ''
        self._last_error_at = -math.inf
        self._last_estimate_at = None
        self._latencies_ms = deque(maxlen=_LATENCY_WINDOW)
        self._decider = PromptDecider(self._library, get('style'),
                                      DecisionConfig(**{n: get(n) for n in _CONFIG_NAMES}))
        self._validated_libraries = {}
        self._publisher = self.publisher(MusicPrompt, topics.PROMPT, qos.LATCHED)
        # Not self._subscriptions: that is rclpy Node's own list (with the /clock subscription
        # of use_sim_time); replacing it left the node's clock standing still.
        self._input_subscriptions = [
            self.subscription(ActivityEstimate, topics.ACTIVITY, self._on_activity, qos.EVENTS),
            self.subscription(HeartRate, topics.HEART_RATE, self._on_heart_rate, qos.SENSOR),
            self.subscription(UserProfile, topics.USER_PROFILE, self._on_profile, qos.LATCHED)]
        self._override_service = self.create_service(OverridePrompt, topics.OVERRIDE_PROMPT,
                                                     self._on_override)
        self._diagnostics = diagnostics.DiagnosticsReporter(self)
        self._diagnostics.add('decision', self._check_decision)
        self._diagnostics.add('inputs', self._check_inputs)
        self.get_logger().info(
            f'prompt builder ready: style {get("style")!r}, presets {list(self._library.names)}')

    def cleanup(self):
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        for subscription in getattr(self, '_input_subscriptions', ()):
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        if getattr(self, '_override_service', None) is not None:
            self.destroy_service(self._override_service)
            self._override_service = None
        if getattr(self, '_publisher', None) is not None:
            self.destroy_lifecycle_publisher(self._publisher)
            self._publisher = None
        self._decider = None

    # --- subscriptions -----------------------------------------------------------------------

    def _on_activity(self, msg):
        self._last_estimate_at = time.monotonic()
        self._decide('activity estimate', self._decider.on_activity,
                     stamp_ns(msg.header.stamp), msg.class_id, msg.confidence)

    def _on_heart_rate(self, msg):
        self._decide('heart rate', self._decider.on_heart_rate, stamp_ns(msg.header.stamp),
                     msg.bpm, msg.confidence)

    def _on_profile(self, msg):
        profile = Profile.from_msg(msg)
        self.get_logger().info(
            f'profile of {msg.user_id or "an unnamed listener"}: age {msg.age}, sex {msg.sex}, '
            f'{msg.height_cm:.1f} cm, {msg.weight_kg:.1f} kg')
        self._decide('profile', self._decider.on_profile, stamp_ns(msg.header.stamp), profile)

    def _on_override(self, request, response):
        """Service: apply an override now; the answer says whether, and which prompt followed."""
        self.get_logger().info(f'override: style={request.style!r} text={request.text!r} '
                               f'clear={request.clear}')
        if not self.is_active():
            response.accepted, response.reason = False, f'prompt_builder is {self.state_label}'
            return response
        prompt = self._decide('override', self._decider.on_override,
                              self.get_clock().now().nanoseconds, request.style, request.text,
                              request.clear)
        response.accepted = self._last_refusal is None
        response.reason = self._last_refusal or ''
        response.prompt_id = prompt.prompt_id if prompt is not None else 0
        return response

    def _decide(self, what, handler, *args):
        """Run one decision; publish the prompt it makes (returned, or None)."""
        started = time.perf_counter()
        self._last_refusal = None
        try:
            prompt = handler(*args)
        except (ValueError, UnknownStyleError) as exc:
            self._errors += 1
            self._last_refusal = str(exc)
            self._last_error, self._last_error_at = f'{what}: {exc}', time.monotonic()
            self.get_logger().warning(f'ignored a bad {what}: {exc}', throttle_duration_sec=5.0)
            return None
        if prompt is not None:
            self._publish(prompt)
        self._latencies_ms.append((time.perf_counter() - started) * 1e3)
        return prompt

    def _publish(self, prompt):
        rendered = prompt.rendered
        msg = MusicPrompt(
            prompt_id=prompt.prompt_id, text=rendered.text, activity=rendered.activity,
            activity_class_id=rendered.activity_class_id,
            heart_rate_bpm=rendered.heart_rate_bpm, target_bpm=rendered.target_bpm,
            energy=rendered.energy, style=rendered.style, reason=int(prompt.reason),
            trigger_stamp=Time(nanoseconds=prompt.trigger_stamp_ns).to_msg())
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publisher.publish(msg)
        log = self.get_logger()
        log.info(f'prompt {prompt.prompt_id} ({prompt.reason_name}): '
                 f'{rendered.activity or "-"}, {rendered.target_bpm:.0f} BPM, '
                 f'energy {rendered.energy:.2f}, style {rendered.style}: {rendered.text!r}')
        if rendered.dropped or rendered.truncated:
            log.warning(f'prompt {prompt.prompt_id} over max_prompt_chars: dropped '
                        f'{list(rendered.dropped)}{", cut the rest" if rendered.truncated else ""}')

    # --- parameters --------------------------------------------------------------------------

    def _validate_parameters(self, parameters):
        changes = {p.name: p.value for p in parameters
                   if p.name in ('style', 'presets_file') + _CONFIG_NAMES}
        if not changes:
            return SetParametersResult(successful=True)
        if self._decider is None:
            # Not configured: configure() reads the parameters; a presets file is checked now.
            try:
                if 'presets_file' in changes:
                    self._library = load_library(changes['presets_file'] or None)
            except PresetError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            return SetParametersResult(successful=True)
        try:
            library = self._decider.library
            if 'presets_file' in changes:
                path = changes['presets_file']
                library = load_library(path or None)
                self._validated_libraries = {path: library}
            self._decider.check_library(library, changes.get('style'))
            replace(self._decider.config,
                    **{n: v for n, v in changes.items() if n in _CONFIG_NAMES})
        except (PresetError, UnknownStyleError, ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters):
        changes = {p.name: p.value for p in parameters
                   if p.name in ('style', 'presets_file') + _CONFIG_NAMES}
        if self._decider is None or not changes:
            return  # unconfigured (configure() reads them), or not a rule (qos_overrides.*)
        rules = {n: v for n, v in changes.items() if n in _CONFIG_NAMES}
        library = (self._validated_libraries.pop(changes['presets_file'])
                   if 'presets_file' in changes else None)
        self._decide('parameter change', self._decider.reconfigure,
                     self.get_clock().now().nanoseconds, library, changes.get('style'),
                     replace(self._decider.config, **rules) if rules else None)

    # --- diagnostics -------------------------------------------------------------------------

    def _check_decision(self):
        status = self._decider.status()
        if not status['activity'] and not status['text_override']:
            return diagnostics.WARN, 'waiting for a confident activity estimate', status
        what = 'text override' if status['text_override'] else status['activity']
        return diagnostics.OK, f'{what}, {status["style"]}, {status["prompts"]} prompts', status

    def _check_inputs(self):
        now = time.monotonic()
        age = now - self._last_estimate_at if self._last_estimate_at is not None else math.nan
        latencies = sorted(self._latencies_ms)
        values = {
            **self._decider.counts,
            'errors': self._errors,
            'last_error': self._last_error,
            'last_estimate_age_s': age,
            'decision_ms_median': statistics.median(latencies) if latencies else math.nan,
            'decision_ms_max': latencies[-1] if latencies else math.nan,
        }
        if now - self._last_error_at < _STALE_AFTER_S:
            return diagnostics.ERROR, f'bad input: {self._last_error}', values
        if age > _STALE_AFTER_S:
            return diagnostics.WARN, f'no activity estimate for {age:.0f} s', values
        return diagnostics.OK, 'inputs flowing' if latencies else 'no input yet', values


def main():
    return run_node(PromptBuilderNode)


if __name__ == '__main__':
    raise SystemExit(main())
