"""The jitter buffer: order under shuffled arrival, duplicates, missing and late fragments,
superseded prompts, stream restarts."""

import random

import numpy as np
import pytest

from muse_player.events import EventKind
from muse_player.jitter_buffer import (MAX_MISSING_EVENTS_PER_GAP, Fragment, FragmentError,
                                       JitterBuffer, StreamKey)

RATE = 1000


def frag(prompt, seq, frames=100, first=None, last=False, value=None):
    audio = np.full((frames, 1), seq if value is None else value, np.float32)
    return Fragment(prompt, seq, audio, RATE, is_first=(seq == 0) if first is None else first,
                    is_last=last)


def kinds(events):
    return [(e.kind, e.prompt_id, e.seq) for e in events]


def start_newest(buffer, now=0.0):
    candidate = buffer.candidate(now)
    assert candidate is not None and not candidate.waiting
    return buffer.start(candidate.key, now)


def drain(buffer, now=0.0):
    out = []
    while True:
        fragment, _ = buffer.pop(now)
        if fragment is None:
            return out
        out.append((fragment.prompt_id, fragment.seq))


@pytest.mark.parametrize('seed', range(5))
def test_shuffled_arrival_comes_out_in_seq_order(seed):
    arrivals = [frag(1, s) for s in range(20)]
    random.Random(seed).shuffle(arrivals)
    buffer = JitterBuffer()
    for fragment in arrivals:
        assert buffer.push(fragment, 0.0) == []
    assert start_newest(buffer) == []
    assert drain(buffer) == [(1, s) for s in range(20)]


def test_candidate_is_the_newest_stream_start_with_its_contiguous_audio():
    buffer = JitterBuffer()
    for fragment in [frag(1, 0), frag(1, 1), frag(2, 0), frag(2, 1), frag(2, 3, last=True)]:
        buffer.push(fragment, 0.0)
    candidate = buffer.candidate(0.0)
    assert candidate.key == StreamKey(2, 0)
    assert candidate.ready_s == pytest.approx(0.2) and not candidate.complete
    buffer.push(frag(2, 2), 0.0)
    candidate = buffer.candidate(0.0)
    assert candidate.ready_s == pytest.approx(0.4) and candidate.complete


def test_starting_a_prompt_drops_older_prompts_and_reports_the_unplayed_one():
    buffer = JitterBuffer()
    for fragment in [frag(1, 0), frag(1, 1), frag(3, 0)]:
        buffer.push(fragment, 0.0)
    events = start_newest(buffer)
    assert kinds(events) == [(EventKind.PROMPT_SUPERSEDED, 1, 0)]
    assert buffer.superseded_fragments == 2
    assert buffer.current_prompt == 3
    # Prompt 1 and 2 are older than the playing one: whatever comes of them is late.
    assert kinds(buffer.push(frag(2, 0), 0.1)) == [(EventKind.FRAGMENT_LATE, 2, 0)]
    assert kinds(buffer.push(frag(1, 2), 0.1)) == [(EventKind.FRAGMENT_LATE, 1, 2)]
    assert buffer.late == 2


def test_duplicates_are_dropped_and_counted_whether_pending_or_already_played():
    buffer = JitterBuffer()
    buffer.push(frag(1, 0), 0.0)
    buffer.push(frag(1, 1), 0.0)
    assert kinds(buffer.push(frag(1, 1), 0.0)) == [(EventKind.FRAGMENT_DUPLICATE, 1, 1)]
    start_newest(buffer)
    assert drain(buffer) == [(1, 0), (1, 1)]
    assert kinds(buffer.push(frag(1, 0), 0.0)) == [(EventKind.FRAGMENT_DUPLICATE, 1, 0)]
    # ... also once a newer prompt plays: a played fragment of the old one is a duplicate.
    buffer.push(frag(2, 0), 0.0)
    start_newest(buffer)
    assert kinds(buffer.push(frag(1, 1), 0.0)) == [(EventKind.FRAGMENT_DUPLICATE, 1, 1)]
    assert buffer.duplicates == 3 and buffer.late == 0


def test_a_missing_seq_is_waited_for_then_skipped_and_a_late_copy_dropped():
    buffer = JitterBuffer(max_wait_missing_s=0.5)
    for seq in (0, 1, 3, 4):
        buffer.push(frag(1, seq), 10.0)
    start_newest(buffer, 10.0)
    assert drain(buffer, 10.0) == [(1, 0), (1, 1)]
    # Not before the wait is over, and not without permission to skip.
    assert buffer.pop(10.49) == (None, [])
    assert buffer.pop(11.0, allow_skip=False) == (None, [])
    fragment, events = buffer.pop(10.5)
    assert (fragment.prompt_id, fragment.seq) == (1, 3)
    assert kinds(events) == [(EventKind.FRAGMENT_MISSING, 1, 2)]
    assert drain(buffer, 10.5) == [(1, 4)]
    assert buffer.missing == 1
    assert kinds(buffer.push(frag(1, 2), 11.0)) == [(EventKind.FRAGMENT_LATE, 1, 2)]


def test_the_wait_runs_from_when_the_gap_became_known():
    buffer = JitterBuffer(max_wait_missing_s=0.5)
    buffer.push(frag(1, 0), 0.0)
    start_newest(buffer)
    drain(buffer)
    buffer.push(frag(1, 2), 5.0)  # seq 1 is known missing from t = 5 on
    assert buffer.pop(5.4) == (None, [])
    buffer.push(frag(1, 1), 5.45)  # ... and arrives in time
    assert drain(buffer, 5.45) == [(1, 1), (1, 2)]
    assert buffer.missing == 0


def test_a_new_prompt_missing_its_first_seq_waits_then_starts_later():
    buffer = JitterBuffer(max_wait_missing_s=0.5)
    buffer.push(frag(1, 1, first=False), 2.0)
    buffer.push(frag(1, 2, first=False), 2.0)
    assert buffer.candidate(2.2).waiting
    candidate = buffer.candidate(2.5)
    assert candidate.key == StreamKey(1, 1) and not candidate.waiting
    events = buffer.start(candidate.key, 2.5)
    assert kinds(events) == [(EventKind.FRAGMENT_MISSING, 1, 0)]
    assert drain(buffer, 2.5) == [(1, 1), (1, 2)]


def test_a_restart_inside_a_prompt_ends_the_running_segment():
    buffer = JitterBuffer()
    for fragment in [frag(1, 0), frag(1, 1), frag(1, 2, first=True), frag(1, 3)]:
        buffer.push(fragment, 0.0)
    # The newest start is the restart; the first segment plays only if started first.
    assert buffer.candidate(0.0).key == StreamKey(1, 2)
    buffer.start(StreamKey(1, 0), 0.0)
    assert drain(buffer) == [(1, 0), (1, 1)]  # pop stops at the restart ...
    candidate = buffer.candidate(0.0)  # ... which the mixer switches to
    assert candidate.key == StreamKey(1, 2) and candidate.ready_s == pytest.approx(0.2)
    buffer.start(candidate.key, 0.0)
    assert drain(buffer) == [(1, 2), (1, 3)]
    assert buffer.candidate(0.0) is None


def test_skipping_a_long_gap_reports_a_bounded_number_of_events_but_counts_all():
    buffer = JitterBuffer(max_wait_missing_s=0.0)
    buffer.push(frag(1, 0), 0.0)
    start_newest(buffer)
    drain(buffer)
    buffer.push(frag(1, 10_000), 0.0)
    fragment, events = buffer.pop(0.0)
    assert fragment.seq == 10_000
    assert len(events) == MAX_MISSING_EVENTS_PER_GAP and buffer.missing == 9_999


def test_pending_fragments_are_capped():
    buffer = JitterBuffer(max_pending_fragments=3)
    for seq in range(5):
        buffer.push(frag(1, seq), 0.0)
    assert buffer.pending_fragments == 3 and buffer.overflow == 2


@pytest.mark.parametrize('kwargs, words', [
    ({'prompt_id': -1}, 'prompt_id is -1'),
    ({'seq': 1.5}, 'seq is 1.5'),
    ({'sample_rate': 0}, 'sample_rate is 0'),
    ({'audio': np.zeros(10, np.float32)}, 'expected float32 (frames, channels)'),
    ({'audio': np.zeros((10, 1), np.int16)}, 'int16'),
])
def test_bad_fragments_are_refused_naming_the_field(kwargs, words):
    fields = {'prompt_id': 1, 'seq': 0, 'audio': np.zeros((10, 1), np.float32),
              'sample_rate': RATE, **kwargs}
    with pytest.raises(FragmentError) as caught:
        Fragment(**fields)
    assert words in str(caught.value)


def test_negative_wait_is_refused():
    with pytest.raises(ValueError, match='max_wait_missing_s'):
        JitterBuffer(max_wait_missing_s=-1)
