"""Signs that another graph shares this one's DDS domain (cross-talk), for nodes and the report.

Each MUSE graph should run on a domain of its own (``muse_common.domain``). When two do not,
they merge silently: a consumer hears two producers with the same node and topic names. What a
consumer can still tell: numbers that must only go forward go back (prompt ids, a replay's
published counters), a (prompt, seq) arrives twice, more messages arrive than the one producer
announced it sent, a topic with one producer has two. Plain module (no rclpy).
"""

from __future__ import annotations


class OrderWatch:
    """Counts a key that must only go forward going back (``regressions``) or repeating
    (``repeats``), e.g. the prompt ids a bridge receives; ``last_regression`` says what."""

    def __init__(self, what):
        self.what = what
        self.last = None
        self.regressions = 0
        self.repeats = 0
        self.last_regression = ''

    def observe(self, key):
        """'ok', 'repeat' or 'regression' for ``key`` (then it becomes the newest)."""
        verdict = 'ok'
        if self.last is not None:
            if key < self.last:
                self.regressions += 1
                self.last_regression = f'{self.what} went back from {self.last} to {key}'
                verdict = 'regression'
            elif key == self.last:
                self.repeats += 1
                verdict = 'repeat'
        self.last = key
        return verdict

    @property
    def suspicious(self):
        return self.regressions > 0


def evidence(*, imu_recorded, imu_announced, profiles_recorded, profiles_announced, user_ids,
             prompt_id_regressions, fragment_repeats, counter_regressions, max_publishers,
             bridge_prompt_regressions=0, imu_stamp_regressions=0):
    """The findings (list of sentences, empty = no sign of another graph) from a session's
    numbers; ``*_announced`` are the replay's own counts (None when it announced none),
    ``max_publishers`` is {topic: most publishers seen at once} of single-producer topics."""
    found = []
    if imu_announced is not None and imu_recorded > imu_announced:
        found.append(f'{imu_recorded} IMU messages recorded but the replay published '
                     f'{imu_announced}')
    if profiles_announced is not None and profiles_recorded > profiles_announced:
        found.append(f'{profiles_recorded} user profiles recorded but the replay published '
                     f'{profiles_announced}')
    if len(user_ids) > 1:
        found.append(f'{len(user_ids)} listeners in one session: {sorted(user_ids)}')
    # A restarted prompt builder or bridge also numbers from the start again: said so.
    if prompt_id_regressions:
        found.append(f'prompt ids went back {prompt_id_regressions} times (or the prompt '
                     'builder restarted)')
    if bridge_prompt_regressions:
        found.append(f'the bridge saw prompt ids go back {bridge_prompt_regressions} times (or '
                     'the prompt builder restarted)')
    if fragment_repeats:
        found.append(f'{fragment_repeats} audio fragments (prompt, seq) arrived twice (or the '
                     'bridge restarted)')
    if counter_regressions:
        found.append(f"the replay's published counters went back {counter_regressions} times "
                     '(two replays)')
    if imu_stamp_regressions:
        found.append(f'IMU stamps went back {imu_stamp_regressions} times at the encoder (two '
                     'replays interleaved)')
    for topic, count in sorted(max_publishers.items()):
        if count > 1:
            found.append(f'{count} publishers on {topic}, which has one producer')
    return found
