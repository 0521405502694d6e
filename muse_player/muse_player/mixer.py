"""The mixer: turns ordered fragments into fixed-size output blocks (no ROS, no clock).

One stream plays at a time (the jitter buffer decides which). Within a stream fragments are
concatenated as they are (they are sample-continuous). At a stream boundary (a new prompt or
an ``is_first`` restart) the mixer crossfades with equal power: the outgoing stream's
already-received audio from the play position on is faded out over ``crossfade_s`` while the
new stream fades in. The last ``declick_s`` of the playing stream are always held back, so
there is something to fade out even when nothing else is left (buffer ran dry, or a switch
finds the old stream exhausted): the sound never stops with a cut.

Late audio is first covered by playing slower: while less than ``stretch_below_s`` of the
playing stream is left (queued and in the jitter buffer), each output block consumes fewer
input frames, down to ``min_playback_rate`` times the block when nothing is left, and stretches
them over the block (as WebRTC's jitter buffer does; here by continuous linear-interpolation
varispeed, so the pitch drops with the rate by 12 log2(1 / rate) semitones, 3.9 at 0.8x,
while it lasts; pitch-preserving stretching would need a phase vocoder or WSOLA with state
across blocks). Only when even that cannot fill a block is it
an underrun: silence entered and left through ``declick_s`` fades; playback resumes once
``prebuffer_s`` is buffered again. ``min_playback_rate`` 1 turns stretching off.
"""

import enum
import math
from collections import deque

import numpy as np

from muse_player.events import EventKind, PlayerEvent
from muse_player.jitter_buffer import JitterBuffer
from muse_player.pcm import StreamResampler, check_channel_mapping, convert_channels


TUNABLES = ('crossfade_s', 'prebuffer_s', 'max_wait_missing_s')
# A forked continuation (protocol REPLACES) is on the old audio's beat grid: it takes over
# inside the not-yet-played old audio with this short equal-power crossfade, in phase.
REPLACE_CROSSFADE_S = 0.02


def check_declick(declick_s):
    """Raise ValueError unless ``declick_s`` is a usable declick fade length (the player's
    configuration and the mixer share this one rule)."""
    if not 0 < declick_s <= 0.1:
        raise ValueError(f'declick_s is {declick_s!r}; expected seconds in (0, 0.1]')


def check_tuning(name, value, declick_s):
    """Raise ValueError unless ``value`` is usable for the tunable ``name``."""
    low = declick_s if name == 'crossfade_s' else 0.0
    if name not in TUNABLES:
        raise ValueError(f'{name!r} is not a mixer setting; expected one of {TUNABLES}')
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= 60.0:
        why = ' (at least the declick fade)' if name == 'crossfade_s' else ''
        raise ValueError(f'{name} is {value!r}; expected seconds in [{low:g}, 60]{why}')


def check_stretch(min_playback_rate, stretch_below_s):
    """Raise ValueError unless the time-stretch settings are usable."""
    if isinstance(min_playback_rate, bool) or not isinstance(min_playback_rate, (int, float)) \
            or not 0.5 <= min_playback_rate <= 1.0:
        raise ValueError(f'min_playback_rate is {min_playback_rate!r}; expected a rate in '
                         '[0.5, 1] (1 = never stretch)')
    if isinstance(stretch_below_s, bool) or not isinstance(stretch_below_s, (int, float)) \
            or not 0.0 <= stretch_below_s <= 60.0:
        raise ValueError(f'stretch_below_s is {stretch_below_s!r}; expected seconds in [0, 60]')


def stretch(audio, frames, previous):
    """``audio`` (n, channels) played over ``frames >= n`` frames by linear interpolation,
    continuing from ``previous`` (the frame heard just before, or None): output frame j is the
    input at position (j + 1) n / frames, so the last output frame is the last input frame and
    consecutive blocks join without a step."""
    count = len(audio)
    source = np.concatenate([audio[:1] if previous is None else previous[None], audio])
    positions = np.arange(1, frames + 1, dtype=np.float64) * (count / frames)
    index = np.minimum(positions.astype(np.int64), count)
    frac = (positions - index)[:, None].astype(np.float32)
    after = np.minimum(index + 1, count)
    return (source[index] * (1.0 - frac) + source[after] * frac).astype(np.float32)


def fade_in_gain(length, start=0, count=None):
    """Equal-power fade-in ``sin(pi/2 t)`` over ``length`` frames, frames [start, start+count)."""
    count = length - start if count is None else count
    t = (np.arange(start, start + count, dtype=np.float64) + 0.5) / length
    return np.sin(0.5 * np.pi * np.clip(t, 0.0, 1.0)).astype(np.float32)


def fade_out_gain(length):
    """Equal-power fade-out ``cos(pi/2 t)`` over ``length`` frames; fade_in² + fade_out² = 1."""
    t = (np.arange(length, dtype=np.float64) + 0.5) / length
    return np.cos(0.5 * np.pi * t).astype(np.float32)


class MixerState(str, enum.Enum):
    IDLE = 'idle'                # nothing to play (before the first stream, or it ended)
    PLAYING = 'playing'
    REBUFFERING = 'rebuffering'  # underrun: filling silence until prebuffer_s is back


class _AudioQueue:
    """FIFO of float32 ``(frames, channels)`` chunks with frame-exact takes."""

    def __init__(self, channels):
        self.channels = channels
        self._chunks = deque()
        self._offset = 0  # frames already taken from _chunks[0]
        self.frames = 0

    def push(self, audio, crossfade=0):
        """Append ``audio``; with ``crossfade`` overlap its head with the queue's tail."""
        overlap = min(crossfade, self.frames, len(audio))
        if overlap:
            tail = self.take_tail(overlap)
            audio = audio.copy()
            audio[:overlap] *= fade_in_gain(overlap)[:, None]
            audio[:overlap] += tail * fade_out_gain(overlap)[:, None]
        if len(audio):
            self._chunks.append(audio)
            self.frames += len(audio)

    def take_tail(self, count):
        """Remove and return the last ``count`` queued frames."""
        parts = []
        remaining = count
        while remaining:
            chunk = self._chunks[-1]
            first = self._offset if len(self._chunks) == 1 else 0
            n = min(remaining, len(chunk) - first)
            parts.append(chunk[len(chunk) - n:])
            if n == len(chunk) - first:
                self._chunks.pop()
                if not self._chunks:
                    self._offset = 0
            else:
                self._chunks[-1] = chunk[:len(chunk) - n]
            remaining -= n
        self.frames -= count
        return np.concatenate(parts[::-1]) if len(parts) > 1 else parts[0].copy()

    def take(self, count):
        out = np.empty((count, self.channels), np.float32)
        filled = 0
        while filled < count:
            chunk = self._chunks[0]
            n = min(count - filled, len(chunk) - self._offset)
            out[filled:filled + n] = chunk[self._offset:self._offset + n]
            filled += n
            self._offset += n
            if self._offset == len(chunk):
                self._chunks.popleft()
                self._offset = 0
        self.frames -= count
        return out

    def scale_tail(self, gain):
        """Multiply the last ``len(gain)`` queued frames by ``gain`` (in place)."""
        remaining = len(gain)
        for index in range(len(self._chunks) - 1, -1, -1):
            if remaining == 0:
                break
            chunk = self._chunks[index]
            first = self._offset if index == 0 else 0
            n = min(remaining, len(chunk) - first)
            # A copy: the chunk may be the caller's fragment audio, which is not ours to change.
            chunk = self._chunks[index] = chunk.copy()
            chunk[len(chunk) - n:] *= gain[remaining - n:remaining, None]
            remaining -= n

    def clear(self):
        self._chunks.clear()
        self._offset = 0
        self.frames = 0


class _Tail:
    """Outgoing audio, already faded, mixed into the next blocks until used up."""

    __slots__ = ('audio', 'position', 'offset')

    def __init__(self, audio, offset=0):
        self.audio = audio
        self.position = 0
        self.offset = offset  # where in the current block it starts


class _Stream:
    """The playing stream: where it started, how much of it was played, its fades."""

    def __init__(self, key, fade_in_frames, announce):
        self.key = key
        self.fade_in_frames = fade_in_frames
        self.announce = announce        # PROMPT_AUDIBLE is due at its first frame
        self.prompt_stamp = None
        self.played = 0                 # frames of this stream handed out so far
        self.declick_start = None       # stream frame where a declick fade-in began
        self.complete = False           # its is_last fragment is in the queue
        self.resampler = None
        self.splice = None              # (stream frame, key, prompt_stamp) where a continuing
                                        # prompt takes over, see Mixer._fill
        self.skip = 0                   # frames of arriving audio to drop (a fork that starts
                                        # before the play position), see Mixer._replace
        self.overlap = 0                # frames of queued audio the next push crossfades with


class Mixer:
    """Jitter buffer + stream stitching; ``next_block`` is called at the sink's pace."""

    def __init__(self, sample_rate, channels, block_frames, *, crossfade_s=0.5,
                 prebuffer_s=0.3, max_wait_missing_s=0.5, declick_s=0.005,
                 min_playback_rate=1.0, stretch_below_s=0.5):
        for name, value in (('sample_rate', sample_rate), ('channels', channels),
                            ('block_frames', block_frames)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'{name} is {value!r}; expected a positive integer')
        check_declick(declick_s)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block_frames = int(block_frames)
        self._reserve = max(1, round(declick_s * self.sample_rate))
        self.buffer = JitterBuffer()
        self.max_wait_missing_s = max_wait_missing_s
        self.crossfade_s = crossfade_s
        self.prebuffer_s = prebuffer_s
        self._queue = _AudioQueue(self.channels)
        self._tails = []
        self._stream = None
        self.state = MixerState.IDLE
        self.frames_out = 0
        self.underruns = 0
        self.underrun_frames = 0
        self.superseded_prompts = 0
        self._underrun_start = None  # output frame where the ongoing underrun began
        check_stretch(min_playback_rate, stretch_below_s)
        self.min_playback_rate = float(min_playback_rate)
        self._stretch_below = round(stretch_below_s * self.sample_rate)
        self.stretched_frames = 0    # output frames played slower than real time
        self.stretch_gained_frames = 0   # output frames those blocks gained (late audio covered)
        self.lowest_rate = 1.0
        self._last_frame = None      # the last input frame played (stretch continuity)

    # -- tunables (may change while playing) -------------------------------------------

    @property
    def declick_s(self):
        return self._reserve / self.sample_rate

    @property
    def crossfade_s(self):
        return self._crossfade / self.sample_rate

    @crossfade_s.setter
    def crossfade_s(self, value):
        check_tuning('crossfade_s', value, self.declick_s)
        self._crossfade = max(self._reserve, round(value * self.sample_rate))

    @property
    def prebuffer_s(self):
        return self._prebuffer / self.sample_rate

    @prebuffer_s.setter
    def prebuffer_s(self, value):
        check_tuning('prebuffer_s', value, self.declick_s)
        self._prebuffer = round(value * self.sample_rate)

    @property
    def max_wait_missing_s(self):
        return self.buffer.max_wait_missing_s

    @max_wait_missing_s.setter
    def max_wait_missing_s(self, value):
        check_tuning('max_wait_missing_s', value, self.declick_s)
        self.buffer.max_wait_missing_s = value

    # -- input ---------------------------------------------------------------------------

    def push(self, fragment, now):
        """Hand a decoded fragment to the jitter buffer; returns drop events (late/dup)."""
        check_channel_mapping(fragment.channels, self.channels)
        return self._here(self.buffer.push(fragment, now))

    def _here(self, events):
        """Place buffer events at the current block's first frame."""
        for event in events:
            event.frame = self.frames_out
        return events

    # -- output --------------------------------------------------------------------------

    def next_block(self, now):
        """The next ``block_frames`` of output and the events that happened in it."""
        events = []
        n_out = self.block_frames
        out = np.zeros((n_out, self.channels), np.float32)
        self._maybe_switch(now, events)
        if self.state is MixerState.REBUFFERING:
            self._maybe_resume(now, events)
        played = 0
        if self.state is MixerState.PLAYING:
            played = self._play(out, now, events)
        if self.state is MixerState.REBUFFERING:
            self.underrun_frames += n_out - played
        self._mix_tails(out)
        self.frames_out += n_out
        return out, events

    def finish(self):
        """Events still open at the end of a session (an underrun in progress)."""
        events = []
        self._end_underrun(events)
        return events

    def _playback_rate(self):
        """How fast to play the next block: 1 while ``stretch_below_s`` or more of the stream
        is left, falling linearly to ``min_playback_rate`` as it runs out."""
        if self.min_playback_rate >= 1.0 or self._stream.complete or not self._stretch_below:
            return 1.0
        left = self._queue.frames - self._reserve + self.buffer.pending_seconds(
            self._stream.key.prompt_id) * self.sample_rate
        if left >= self._stretch_below:
            return 1.0
        return 1.0 - (1.0 - self.min_playback_rate) * (1.0 - max(0.0, left) / self._stretch_below)

    def _play(self, out, now, events):
        """Fill ``out`` from the playing stream; returns how many frames it provided."""
        stream = self._stream
        n_out = len(out)
        self._fill(n_out + self._reserve, now, allow_skip=True, events=events)
        available = self._queue.frames if stream.complete else self._queue.frames - self._reserve
        rate = self._playback_rate()
        wanted = n_out if rate >= 1.0 else max(1, round(n_out * rate))
        if rate < 1.0 and available < wanted and available >= math.ceil(n_out * self.min_playback_rate):
            wanted = available      # stretch what is there rather than fall silent
        count = max(0, min(wanted, available))
        if count == wanted and wanted < n_out:
            taken = self._take(count, self.frames_out, events)
            out[:] = stretch(taken, n_out, self._last_frame)
            self._last_frame = taken[-1].copy()
            self.stretched_frames += n_out
            self.stretch_gained_frames += n_out - count
            self.lowest_rate = min(self.lowest_rate, count / n_out)
            return n_out
        if count:
            out[:count] = self._take(count, self.frames_out, events)
            self._last_frame = out[count - 1].copy()
        if count < n_out:
            if stream.complete:
                self.state = MixerState.IDLE  # it ended; its last frames were faded on arrival
            else:
                held = min(self._reserve, self._queue.frames)
                if held:
                    audio = self._take(held, self.frames_out + count, events)
                    self._tails.append(_Tail(audio * fade_out_gain(held)[:, None], offset=count))
                self.state = MixerState.REBUFFERING
                self._last_frame = None
                self.underruns += 1
                self._underrun_start = self.frames_out + count
        return count

    def _take(self, count, at_frame, events):
        """Take frames of the playing stream, to be heard from output frame ``at_frame`` on,
        with its fade-in envelopes applied; the prompt's first frames announce it."""
        stream = self._stream
        if stream.announce:
            events.append(PlayerEvent(EventKind.PROMPT_AUDIBLE, stream.key.prompt_id,
                                      stream.key.seq, frame=at_frame,
                                      prompt_stamp=stream.prompt_stamp))
            stream.announce = False
        audio = self._queue.take(count)
        first = stream.played
        if stream.splice is not None and stream.splice[0] < first + count:
            at, stream.key, stream.prompt_stamp = stream.splice
            stream.splice = None
            events.append(PlayerEvent(EventKind.PROMPT_AUDIBLE, stream.key.prompt_id,
                                      stream.key.seq, frame=at_frame + at - first,
                                      prompt_stamp=stream.prompt_stamp))
        if first < stream.fade_in_frames:
            n = min(count, stream.fade_in_frames - first)
            audio[:n] *= fade_in_gain(stream.fade_in_frames, first, n)[:, None]
        if stream.declick_start is not None:
            done = first - stream.declick_start
            n = min(count, self._reserve - done)
            if n > 0:
                audio[:n] *= fade_in_gain(self._reserve, done, n)[:, None]
            else:
                stream.declick_start = None
        stream.played += count
        return audio

    def _fill(self, target_frames, now, allow_skip, events):
        """Move ordered fragments of the playing stream into the queue up to a target."""
        stream = self._stream
        while self._queue.frames < target_frames and not stream.complete:
            fragment, skipped = self.buffer.pop(now, allow_skip)
            events += self._here(skipped)
            if fragment is None:
                return
            if stream.prompt_stamp is None:
                stream.prompt_stamp = fragment.prompt_stamp
            if skipped:
                # A skipped seq leaves a seam: the audio on both sides does not continue
                # each other, so overlap them with a short equal-power crossfade.
                self._push(self._convert(fragment, after_gap=True), crossfade=self._reserve)
            else:
                self._push(self._convert(fragment))
            follow = self.buffer.continuation() if fragment.is_last else None
            if follow is not None:
                # The server retargeted its stream: the next prompt continues this audio
                # sample-for-sample, so it is appended as is (no fade, no crossfade), or, when
                # it was forked inside the audio already sent, replaces that audio from there.
                first = self.buffer.fragment(follow)
                events += self._here(self.buffer.start(follow, now))
                if first.replaces:
                    self._replace(round(first.replaces * self.sample_rate / first.sample_rate))
                stream.splice = (stream.played + self._queue.frames - stream.overlap, follow,
                                 first.prompt_stamp)
            elif fragment.is_last:
                stream.complete = True
                fade = min(self._reserve, self._queue.frames)
                self._queue.scale_tail(fade_out_gain(fade))

    def _replace(self, rewind):
        """The continuation arriving next starts ``rewind`` frames before the end of the queued
        audio: drop the queued audio it replaces, but for ``REPLACE_CROSSFADE_S`` of it that
        the continuation's head crossfades with; if the fork point was already played, drop the
        continuation's head up to the play position instead (no gap, nothing heard twice)."""
        stream = self._stream
        queued = self._queue.frames
        kept = max(queued - rewind, 0)          # old audio before the fork point
        overlap = min(round(REPLACE_CROSSFADE_S * self.sample_rate), queued - kept)
        if queued - kept - overlap:
            self._queue.take_tail(queued - kept - overlap)
        stream.overlap = overlap
        stream.skip = max(rewind - queued, 0)
        stream.resampler = None   # its state holds old audio past the fork point

    def _push(self, audio, crossfade=0):
        """Queue the playing stream's next audio, minus what a fork skips, crossfaded with
        what it overlaps (see _replace)."""
        stream = self._stream
        if stream.skip:
            n = min(stream.skip, len(audio))
            audio, stream.skip = audio[n:], stream.skip - n
            if not len(audio):
                return
        if stream.overlap:
            crossfade, stream.overlap = stream.overlap, 0
        self._queue.push(audio, crossfade=crossfade)

    def _convert(self, fragment, after_gap=False):
        stream = self._stream
        resampler = stream.resampler
        audio = []
        if resampler is None or after_gap or resampler.source_rate != fragment.sample_rate \
                or resampler.channels != fragment.channels:
            if resampler is not None:
                audio.append(convert_channels(resampler.flush(), self.channels))
            resampler = stream.resampler = StreamResampler(
                fragment.sample_rate, self.sample_rate, fragment.channels)
        audio.append(convert_channels(resampler.process(fragment.audio, last=fragment.is_last),
                                      self.channels))
        return audio[0] if len(audio) == 1 else np.concatenate(audio)

    def _maybe_resume(self, now, events):
        stream = self._stream
        threshold = max(self._prebuffer, self.block_frames) + self._reserve
        self._fill(threshold, now, allow_skip=True, events=events)
        if self._queue.frames >= threshold or (stream.complete and self._queue.frames):
            self._end_underrun(events)
            stream.declick_start = stream.played
            self.state = MixerState.PLAYING
        elif stream.complete:
            self._end_underrun(events)
            self.state = MixerState.IDLE

    def _end_underrun(self, events):
        if self._underrun_start is None:
            return
        duration = (self.frames_out - self._underrun_start) / self.sample_rate
        events.append(PlayerEvent(EventKind.UNDERRUN, self._stream.key.prompt_id,
                                  frame=self._underrun_start, duration_s=duration))
        self._underrun_start = None

    def _maybe_switch(self, now, events):
        candidate = self.buffer.candidate(now)
        if candidate is None or candidate.waiting:
            return
        if candidate.continues and self.state is MixerState.PLAYING:
            if self.buffer.fragment(candidate.key).replaces:
                # A fork replaces audio not yet played: take the old prompt up to its last
                # fragment now, so the splice (_fill) lands before the fork point is heard.
                self._fill(math.inf, now, allow_skip=False, events=events)
            return  # spliced on when the playing prompt's last fragment is taken (_fill)
        needed_s = max(self._prebuffer, self.block_frames + self._reserve) / self.sample_rate
        if not (candidate.complete or candidate.ready_s >= needed_s):
            return
        old = self._stream
        if self.state is MixerState.PLAYING:
            # The old stream's already-received continuation is faded out, not cut.
            self._fill(self._crossfade, now, allow_skip=False, events=events)
            length = min(self._crossfade, self._queue.frames)
            if length:
                audio = self._take(length, self.frames_out, events)
                self._tails.append(_Tail(audio * fade_out_gain(length)[:, None]))
        elif self.state is MixerState.REBUFFERING:
            self._end_underrun(events)  # its reserve was faded out when it ran dry
        self._queue.clear()
        self._last_frame = None
        new_prompt = old is None or old.key.prompt_id != candidate.key.prompt_id
        if old is not None and new_prompt and self.state is not MixerState.IDLE:
            self.superseded_prompts += 1
            events.append(PlayerEvent(EventKind.PROMPT_SUPERSEDED, old.key.prompt_id,
                                      old.key.seq, frame=self.frames_out))
        events += self._here(self.buffer.start(candidate.key, now))
        self._stream = _Stream(candidate.key, self._crossfade, announce=new_prompt)
        self.state = MixerState.PLAYING

    def _mix_tails(self, out):
        n_out = len(out)
        alive = []
        for tail in self._tails:
            start = tail.offset
            n = min(n_out - start, len(tail.audio) - tail.position)
            out[start:start + n] += tail.audio[tail.position:tail.position + n]
            tail.position += n
            tail.offset = 0
            if tail.position < len(tail.audio):
                alive.append(tail)
        self._tails = alive

    # -- reporting -----------------------------------------------------------------------

    def depth_s(self):
        """Audio waiting to be played for the playing prompt, queued and in the buffer [s]."""
        queued = self._queue.frames / self.sample_rate
        if self._stream is None:
            return queued + self.buffer.pending_seconds()
        return queued + self.buffer.pending_seconds(self._stream.key.prompt_id)

    def stats(self):
        stats = self.buffer.stats()
        stats.update({
            'state': self.state.value,
            'prompt_id': self._stream.key.prompt_id if self._stream else None,
            'depth_s': self.depth_s(),
            'underruns': self.underruns,
            'underrun_s': self.underrun_frames / self.sample_rate,
            'superseded_prompts': self.superseded_prompts,
            'output_s': self.frames_out / self.sample_rate,
            'stretched_s': self.stretched_frames / self.sample_rate,
            'stretch_gained_s': self.stretch_gained_frames / self.sample_rate,
            'lowest_playback_rate': self.lowest_rate,
        })
        return stats
