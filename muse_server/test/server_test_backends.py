"""Test-only backends for the server tests: a sine whose frequency encodes the prompt, so the
tests can check continuity and context hand-over exactly, plus knobs for slow or failing
streams. Served by name ``server_test_backends:SineBackend`` (the test directory on sys.path).
"""

import threading
import time

import numpy as np

from muse_server.backends.base import BackendError, MusicBackend, MusicStream

SAMPLE_RATE = 8000


def frequency_of(prompt_id):
    return 200.0 + 50.0 * (prompt_id % 8)


class SineStream(MusicStream):
    def __init__(self, backend, prompt, context):
        self.backend = backend
        self.prompt = prompt
        self.context = context
        self.index = 0
        self.produced = 0
        self.closed = False

    def next_fragment(self):
        if self.closed:
            raise BackendError('next_fragment after close')
        if self.backend.fail_prompt_after.get(self.prompt.prompt_id) == self.produced:
            self.backend.fail_prompt_after.pop(self.prompt.prompt_id)
            raise BackendError(f'injected failure of prompt {self.prompt.prompt_id}')
        if self.backend.blocked_prompts.get(self.prompt.prompt_id) == self.produced:
            self.backend.blocked.set()
            self.backend.unblocked.wait()  # a hung backend call until the test releases it
        if self.backend.fragment_delay_s:
            time.sleep(self.backend.fragment_delay_s)
        if self.prompt.prompt_id in self.backend.nan_prompts:
            return np.full((self.backend.fragment_samples, 1), np.nan, np.float32)
        n = self.backend.fragment_samples
        t = (self.index + np.arange(n)) / SAMPLE_RATE
        self.index += n
        self.produced += 1
        tone = 0.5 * np.sin(2 * np.pi * frequency_of(self.prompt.prompt_id) * t)
        return tone.astype(np.float32)[:, None]

    def close(self):
        self.closed = True
        with self.backend.lock:
            self.backend.closed_streams += 1


class RetargetingSineStream(SineStream):
    def retarget(self, prompt):
        """Play on, from the same sample index, at the new prompt's tone."""
        self.prompt = prompt
        return True


class ForkingSineStream(RetargetingSineStream):
    def fork(self, prompt, at_sample):
        """Play the new prompt's tone from stream sample ``at_sample`` on (the tone's phase
        is the stream's sample index, so a fork stays on the old timeline)."""
        self.backend.forks.append(at_sample)
        self.prompt = prompt
        self.index = at_sample
        return at_sample


class SineBackend(MusicBackend):
    name = 'sine'
    sample_rate = SAMPLE_RATE
    channels = 1

    def __init__(self, fragment_s=0.25, open_delay_s=0.0, slow_prompts=(), fragment_delay_s=0.0,
                 fail_prompt_after=None, fail_open_prompts=(), nan_prompts=(),
                 blocked_prompts=None, retargets=False):
        self.fragment_samples = int(round(fragment_s * SAMPLE_RATE))
        self.open_delay_s = open_delay_s
        self.slow_prompts = set(slow_prompts)
        self.fragment_delay_s = fragment_delay_s
        self.fail_prompt_after = dict(fail_prompt_after or {})
        self.fail_open_prompts = set(fail_open_prompts)
        self.nan_prompts = set(nan_prompts)  # streams of these produce invalid audio
        self.retargets = retargets  # streams steer to a new prompt (MusicStream.retarget);
                                    # 'fork': from a sample offset too (MusicStream.fork)
        self.forks = []             # at_sample of each fork call
        # prompt_id -> fragments made before next_fragment blocks until `unblocked` is set
        # (JSON keys from --backend-option are strings)
        self.blocked_prompts = {int(k): v for k, v in (blocked_prompts or {}).items()}
        self.blocked = threading.Event()    # set once a call is blocked
        self.open_started = threading.Event()
        self.unblocked = threading.Event()
        self.lock = threading.Lock()
        self.opened = []          # (prompt, context) per open_stream call
        self.closed_streams = 0

    def open_stream(self, prompt, context=None):
        self.open_started.set()
        if prompt.prompt_id in self.fail_open_prompts:
            raise BackendError(f'injected open failure of prompt {prompt.prompt_id}')
        if prompt.prompt_id in self.slow_prompts:
            time.sleep(self.open_delay_s)
        with self.lock:
            self.opened.append((prompt, None if context is None else context.copy()))
        kind = {False: SineStream, True: RetargetingSineStream, 'fork': ForkingSineStream}
        return kind[self.retargets](self, prompt, context)
