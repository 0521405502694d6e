"""The data-time smoothers of the published class ('evidence' change detector, 'hmm' forward
filter) on scripted probability sequences: they follow a real change, ignore a short blip,
and behave the same per second of data whatever the stride."""

import numpy as np
import pytest

from muse_encoder.inference import ProbabilitySmoother, SmoothingSettings

CLASSES = 9
A, B, C = 7, 4, 8          # walking, cycling, working


def probabilities(top, p, second=None, q=0.0):
    """A probability vector with ``p`` on ``top`` (and ``q`` on ``second``), the rest spread."""
    v = np.zeros(CLASSES)
    v[top] = p
    if second is not None:
        v[second] = q
    rest = [c for c in range(CLASSES) if v[c] == 0]
    v[rest] = (1 - v.sum()) / len(rest)
    return v


def run(smoother, sequence, dt_s):
    return [smoother.update(p, dt_s)[0] for p in sequence]


def data_time_trajectory(t):
    """A at 0.9 until 20 s, a 3 s crossover, then B at 0.95: what the CNN does at a change."""
    if t < 20:
        return probabilities(A, 0.9)
    if t < 23:
        w = (t - 20) / 3
        return probabilities(B, 0.05 + 0.9 * w, A, 0.9 - 0.85 * w)
    return probabilities(B, 0.95)


@pytest.mark.parametrize('method', ['evidence', 'hmm'])
def test_a_real_change_is_followed_within_seconds(method):
    smoother = ProbabilitySmoother(method)
    published = run(smoother, [data_time_trajectory(t) for t in np.arange(0, 40, 1.0)], 1.0)
    assert published[:20] == [A] * 20
    switch = published.index(B)
    assert 20 <= switch <= 27, published
    assert set(published[switch:]) == {B}
    assert set(published) == {A, B}                      # nothing else on the way


@pytest.mark.parametrize('method', ['evidence', 'hmm'])
def test_a_short_blip_of_another_class_does_not_switch(method):
    """Two windows that name 'working' at 0.6 (the flicker seen at transitions) are not a change."""
    smoother = ProbabilitySmoother(method)
    sequence = [probabilities(A, 0.9)] * 15 + [probabilities(C, 0.6, A, 0.3)] * 2 + [probabilities(A, 0.9)] * 10
    published = run(smoother, sequence, 1.0)
    assert published == [A] * len(sequence)


def test_evidence_needs_a_lead_beyond_the_margin():
    """A class that leads by less than the margin never takes over; one that leads by more
    takes over after threshold / (lead - margin) seconds of data."""
    settings = SmoothingSettings('evidence', margin=2.0, threshold=1.0)
    smoother = ProbabilitySmoother(**{k: v for k, v in vars(settings).items()})
    weak = probabilities(B, 0.6, A, 0.3)                 # lead log(2) < 2 nats
    assert set(run(smoother, [probabilities(A, 0.9)] + [weak] * 60, 0.5)) == {A}
    smoother.reset()
    strong = probabilities(B, 0.9, A, 0.9 * np.exp(-3))  # lead of 3 nats over the runner-up
    lead = np.log(strong[B]) - np.log(strong[A])
    published = run(smoother, [probabilities(A, 0.9)] + [strong] * 20, 0.25)
    seconds = published.index(B) * 0.25
    assert seconds == pytest.approx(1.0 / (lead - 2.0), abs=0.25)


@pytest.mark.parametrize('method', ['evidence', 'hmm'])
def test_switching_happens_at_the_same_data_time_for_any_stride(method):
    switch_s = {}
    for stride in (0.25, 0.5, 1.0, 2.0):
        smoother = ProbabilitySmoother(method)
        times = np.arange(0, 40, stride)
        published = run(smoother, [data_time_trajectory(t) for t in times], stride)
        switch_s[stride] = times[published.index(B)]
    # A window every 0.25 s or every 2 s: the change is named at the same data time, to
    # within one stride (when the next window comes).
    assert max(switch_s.values()) - min(switch_s.values()) <= 2.0, switch_s
    assert abs(switch_s[0.25] - switch_s[1.0]) <= 1.0, switch_s


def test_confidence_is_the_newest_windows_belief_in_the_published_class():
    smoother = ProbabilitySmoother('evidence')
    smoother.update(probabilities(A, 0.9), 1.0)
    class_id, confidence, _ = smoother.update(probabilities(C, 0.6, A, 0.3), 1.0)
    assert class_id == A and confidence == pytest.approx(0.3)   # held, but visibly doubted


def test_hmm_posterior_is_a_distribution():
    smoother = ProbabilitySmoother('hmm')
    for t in range(30):
        class_id, confidence, posterior = smoother.update(data_time_trajectory(t), 1.0)
    assert posterior.sum() == pytest.approx(1.0, abs=1e-5)
    assert class_id == B and confidence == posterior.max()


def test_data_time_settings_are_validated():
    for bad in (dict(margin=-1.0), dict(threshold=float('nan')), dict(switch_rate=float('inf')),
                dict(evidence_weight=0.0)):
        with pytest.raises(ValueError):
            ProbabilitySmoother('evidence', **bad)
    with pytest.raises(ValueError, match='dt_s'):
        ProbabilitySmoother('evidence').update(probabilities(A, 0.9), 0.0)
    assert SmoothingSettings().method == 'evidence'              # the node's default
