"""The whole graph, every node its own process, on a synthetic subject at an accelerated rate:
sensor_replay -> activity_encoder -> prompt_builder -> cloud_bridge <-> music server ->
audio_player, with the session recorder writing the bag and the report.

What it must show: ordered, gap-free audio; prompts that follow the activity changes; and a
sane session report. The same path is used by the README's main-job command.
"""

import json

import numpy as np
import pytest
import soundfile
from graph_session import params_file_with, run_graph
from muse_bringup.session_data import label_at, load_session

RATE = 6.0
MINUTES = 8.0
# Faster decisions than the demo's defaults, so that short activities at 6x still get music.
FAST_DECISIONS = {'prompt_builder': {'min_dwell_s': 1.5, 'hr_zone_dwell_s': 1.5}}

pytestmark = pytest.mark.slow


def check_ordered_gap_free_audio(session, data, metrics):
    # Arrival order: prompt ids never go back, and each prompt's seqs are 0, 1, 2, ...
    prompt_ids = [f[1] for f in data.fragments]
    assert prompt_ids == sorted(prompt_ids), 'fragments of an older prompt arrived after a newer one'
    per_prompt = {}
    for _, prompt_id, seq, *_ in data.fragments:
        per_prompt.setdefault(prompt_id, []).append(seq)
    for prompt_id, seqs in per_prompt.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), \
            f'prompt {prompt_id}: seqs not contiguous and ordered: {seqs[:20]}...'
    assert metrics['fragments']['late'] == 0
    assert metrics['fragments']['duplicate'] == 0
    assert metrics['fragments']['missing'] == 0
    assert metrics['underruns']['count'] == 0, metrics['underruns']

    audio, rate = soundfile.read(str(session / 'session.wav'), dtype='float32')
    expected_s = MINUTES * 60 / RATE
    assert len(audio) / rate > 0.8 * expected_s, f'only {len(audio) / rate:.1f} s of audio'
    assert metrics['audio']['silent_stretches'] == 0, metrics['audio']
    assert np.isfinite(audio).all() and np.max(np.abs(audio)) <= 1.0


def check_prompts_follow_activity(data, metrics):
    from muse_msgs.msg import MusicPrompt
    changes = [p for p in data.prompts if p['reason'] == MusicPrompt.REASON_ACTIVITY_CHANGE]
    assert len(changes) >= 4, f'only {len(changes)} activity-change prompts: {metrics["prompts"]}'
    # Each prompt names an activity the ground truth showed shortly before (the encoder's 8 s
    # window, two strides, the dwell time and a second of delivery at this rate; stamps are
    # data time: the graph runs on the replay's /clock).
    lookback = 8.0 + 2 * 2.0 + FAST_DECISIONS['prompt_builder']['min_dwell_s'] + RATE * 1.0
    follows = 0
    for prompt in changes:
        seen = {label_at(data.ground_truth, prompt['stamp'] - dt)
                for dt in np.arange(0.0, lookback, 0.1)}
        follows += prompt['class_id'] in seen
    assert follows >= 0.8 * len(changes), \
        f'{follows}/{len(changes)} prompts match a recent ground-truth activity'
    assert len({p['class_id'] for p in data.prompts}) >= 5
    ids = [p['prompt_id'] for p in data.prompts]
    assert ids == list(range(1, len(ids) + 1)), f'prompt ids not 1..n: {ids}'


def check_report(session, data, metrics):
    from muse_msgs.msg import PlaybackEvent
    png = session / 'timeline.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 50_000
    latency = metrics['activity_change_to_audible_s']
    assert latency['n'] >= 4 and 0 < latency['p50'] <= latency['p95'] < 2.0, latency
    # Every prompt became audible, unless a newer one superseded it before its music could
    # start (the first heart rate refines the initial prompt a moment after it is made).
    audible = {pid for _, event, pid, *_ in data.playback if event == PlaybackEvent.PROMPT_AUDIBLE}
    for prompt, following in zip(data.prompts, data.prompts[1:] + [None]):
        if prompt['prompt_id'] not in audible:
            # Stamps are data time: a wall second is RATE of them.
            assert following is not None and following['stamp'] - prompt['stamp'] < RATE, \
                f"prompt {prompt['prompt_id']} never became audible"
    assert metrics['prompt_to_audible_s']['n'] == len(audible)
    assert metrics['encoder']['accuracy'] > 0.7, metrics['encoder']
    assert metrics['imu_messages'] > 0.9 * MINUTES * 60 * 32
    assert metrics['summary'] and all(isinstance(line, str) for line in metrics['summary'])


def test_whole_graph_with_the_synth_backend(tmp_path):
    params = params_file_with(tmp_path, FAST_DECISIONS)
    code, session, output = run_graph(
        tmp_path, '--synthetic-minutes', MINUTES, '--rate', RATE, '--seed', 11,
        '--params-file', params, '--tail-s', 2)
    assert code == 0, output
    for name in ('session.wav', 'timeline.png', 'metrics.json', 'session_bag'):
        assert (session / name).exists(), f'{name} missing; output:\n{output}'
    metrics = json.loads((session / 'metrics.json').read_text())
    data = load_session(session / 'session_bag')
    check_ordered_gap_free_audio(session, data, metrics)
    check_prompts_follow_activity(data, metrics)
    check_report(session, data, metrics)


@pytest.fixture
def tiny_musicgen_dir(tmp_path):
    """A tiny random-weight MusicGen (musicgen-small's layout) saved like a hub checkpoint, so
    the server loads it through the real from_pretrained / AutoProcessor path."""
    from muse_server.backends.musicgen_random import (build_processor, build_t5_tokenizer,
                                                            random_musicgen, tiny_musicgen_config)
    tokenizer = build_t5_tokenizer()
    model_dir = tmp_path / 'tiny-musicgen'
    random_musicgen(tiny_musicgen_config(len(tokenizer)), seed=0).save_pretrained(model_dir)
    build_processor(tokenizer).save_pretrained(model_dir)
    return model_dir


def test_whole_graph_with_a_tiny_random_musicgen(tmp_path, tiny_musicgen_dir):
    params = params_file_with(tmp_path, FAST_DECISIONS)
    code, session, output = run_graph(
        tmp_path, '--synthetic-minutes', MINUTES, '--rate', RATE, '--seed', 11,
        '--params-file', params, '--tail-s', 2, '--backend', 'musicgen',
        '--model', tiny_musicgen_dir)
    assert code == 0, output
    assert 'musicgen' in (session / 'logs' / 'music_server.log').read_text()
    metrics = json.loads((session / 'metrics.json').read_text())
    data = load_session(session / 'session_bag')
    check_ordered_gap_free_audio(session, data, metrics)
    check_prompts_follow_activity(data, metrics)
    check_report(session, data, metrics)
