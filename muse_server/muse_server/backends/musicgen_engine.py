"""Continuous batching for MusicGen: one thread owns the decoder and steps every active stream
together, one forward pass per step.

A stream (:class:`EngineStream`) lives in one of three places:

- *opening*: its window's prefix (start token + audio prompt) runs through the decoder alone
  into a private cache, ``prefill_chunk`` columns per engine iteration, interleaved with the
  batch's steps so a long audio prompt does not stall the streams already playing; the last
  chunk samples its first token;
- *batched*: it owns consecutive rows of the :class:`~.musicgen_decoder.BatchCache` (two with
  classifier-free guidance) and advances one column per engine step with all the others, each
  row at its own position with its own text;
- *gone*: closed or failed. A stream whose window is full leaves its rows and opens the next
  window (prompted with its last frames) the same way a new stream opens its first.

Streams join and leave between steps; a leaving stream's rows are refilled by the batch's last
stream (one copy), so the batch is always the first rows of the cache and a step is one pass
over contiguous views. Each stream samples with its own ``torch.Generator`` and its own logits,
in the same order as alone, so a seeded stream draws the same tokens in a batch as alone
(``test_musicgen_backend`` checks it). A stream may run at most ``prefetch_steps`` steps ahead of
what its reader asked for; a stream that has reached that bound still rides in the batch (its
rows are computed and the result dropped: cheaper than moving caches around, and it only
happens while the engine has time to spare) but samples nothing.

Failure isolation: a stream whose sampling fails (NaN logits, ...) ends alone; when the batched
forward pass itself raises, each stream is retried alone and only those that fail alone end.

Morphing (:meth:`BatchEngine.retarget`): a stream keeps its cache and position and moves from
its old text to a new one over ``morph_steps`` steps: the cross-attention output is
``(1 - w) * attend(old) + w * attend(new)`` with ``w`` rising linearly to 1, after which the new
text replaces the old (the null row of guidance is the same for both texts).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import torch

from muse_server.backends.musicgen_decoder import BatchCache, CrossKV, DecoderPass, PrivateCache
from muse_server.backends.musicgen_generation import CodeWindows, SamplingOptions, sample


class StreamFailed(RuntimeError):
    """The engine ended this stream (its own failure, or the engine stopped)."""


@dataclass
class _Morph:
    target: CrossKV
    steps: int
    done: int = 0

    def weight(self) -> float:
        return morph_weight(self.done + 1, self.steps)


def morph_weight(step: int, steps: int) -> float:
    """Weight of the new text at the ``step``-th (1-based) step of a ``steps``-step morph."""
    return 1.0 if steps <= 0 else min(1.0, step / steps)


@dataclass
class EngineStream:
    """One stream's state inside the engine (made by :meth:`BatchEngine.add`)."""

    codes: CodeWindows
    condition: CrossKV
    sampling: SamplingOptions
    generator: torch.Generator
    rows: int
    processors: object = None
    ids_for_processors: torch.Tensor | None = None
    # produced, not yet taken: one entry per step, a (num_codebooks, 0 or 1) frame
    outputs: collections.deque = field(default_factory=collections.deque)
    produced: int = 0           # steps sampled
    taken: int = 0              # steps handed to the reader
    allowed: int = 0            # steps the reader allows (asked + prefetch)
    failure: str | None = None
    closed: bool = False
    slot: int | None = None     # index in the batch, None while opening or gone
    private: PrivateCache | None = None
    morph: _Morph | None = None
    pending_morph: _Morph | None = None

    def wants_step(self) -> bool:
        return not self.closed and self.failure is None and self.produced < self.allowed


@dataclass
class EngineStats:
    """What the engine measured; read by capacity planning (musicgen_capacity)."""

    steps: int = 0                          # batched decode passes
    stream_steps: int = 0                   # streams stepped, summed over passes
    step_seconds: float = 0.0               # time in batched passes
    morph_steps: int = 0
    prefill_chunks: int = 0
    prefill_seconds: float = 0.0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=256))
    # (batch size, seconds) of recent passes


class BatchEngine:
    """The decoding loop: one thread, one forward pass per step over every batched stream."""

    def __init__(self, model, *, prefill_chunk: int = 256, prefetch_steps: int = 0,
                 name: str = 'musicgen-engine', on_request_done=None):
        """``on_request_done()`` is called (on the engine thread) whenever a stream has made
        all the steps its reader waits for, before the reader is woken."""
        self.decoder = DecoderPass(model.decoder)
        self._dtype = next(model.decoder.parameters()).dtype
        self._device = next(model.decoder.parameters()).device
        self._max_positions = model.decoder.config.max_position_embeddings
        self.prefill_chunk = prefill_chunk
        self.prefetch_steps = prefetch_steps
        self.on_request_done = on_request_done
        self._cache = BatchCache(self.decoder.num_layers, self.decoder.heads,
                                 self.decoder.head_dim, self.decoder.scaling, self._dtype,
                                 self._device, self._max_positions)
        self._cross = None            # CrossKV padded to the batch: rows x max text length
        self._morph_targets = None    # (batch composition, CrossKV) while streams morph
        self._composition = 0         # changes whenever a stream's rows or texts change
        self._batch: list[EngineStream] = []
        self._opening: collections.deque[EngineStream] = collections.deque()
        self._joining: list[EngineStream] = []      # added by readers, taken by the loop
        self._leaving: list[EngineStream] = []
        self._condition = threading.Condition()
        self._stopping = False
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ----- called from readers' threads -----

    def add(self, stream: EngineStream) -> EngineStream:
        """Queue ``stream`` to open (prefill) and join the batch."""
        stream.processors = stream.sampling.logits_processors()
        stream.ids_for_processors = torch.zeros((stream.codes.num_codebooks, 1), dtype=torch.long,
                                                device=self._device)
        with self._condition:
            if self._stopping:
                raise StreamFailed('the musicgen engine is stopped')
            self._joining.append(stream)
            self._condition.notify_all()
        return stream

    def take(self, stream: EngineStream, steps: int) -> list[torch.Tensor]:
        """Block until ``stream`` has run ``steps`` more steps; return their frames."""
        with self._condition:
            stream.allowed = max(stream.allowed, stream.taken + steps + self.prefetch_steps)
            self._condition.notify_all()
            self._condition.wait_for(lambda: stream.produced >= stream.taken + steps
                                     or stream.failure is not None or self._stopping)
            if stream.produced < stream.taken + steps:
                raise StreamFailed(stream.failure or 'the musicgen engine stopped')
            frames = [stream.outputs.popleft() for _ in range(steps)]
            stream.taken += steps
        return frames

    def retarget(self, stream: EngineStream, target: CrossKV, morph_steps: int) -> None:
        """Move ``stream`` to the text of ``target`` over its next ``morph_steps`` steps."""
        with self._condition:
            stream.pending_morph = _Morph(target, morph_steps)
            self._condition.notify_all()

    def remove(self, stream: EngineStream) -> None:
        with self._condition:
            stream.closed = True
            self._leaving.append(stream)
            self._condition.notify_all()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)

    @property
    def batch_size(self) -> int:
        return len(self._batch)

    @property
    def active_streams(self) -> int:
        with self._condition:
            return len(self._batch) + len(self._opening) + len(self._joining)

    # ----- the loop -----

    def _has_work(self) -> bool:
        return bool(self._joining or self._leaving
                    or any(s.wants_step() for s in self._opening)
                    or any(s.wants_step() for s in self._batch))

    def _run(self):
        try:
            self._loop()
        except BaseException as exc:  # an engine bug: end every stream rather than hang them
            with self._condition:
                self._stopping = True
                for stream in [*self._batch, *self._opening, *self._joining]:
                    stream.failure = stream.failure or f'musicgen engine failed: {exc!r}'
                self._condition.notify_all()
            raise

    def _loop(self):
        with torch.inference_mode():
            while True:
                with self._condition:
                    self._condition.wait_for(lambda: self._stopping or self._has_work())
                    if self._stopping:
                        for stream in [*self._batch, *self._opening, *self._joining]:
                            stream.failure = stream.failure or 'the musicgen engine stopped'
                        self._condition.notify_all()
                        return
                    self._opening.extend(self._joining)
                    self._joining.clear()
                    leaving, self._leaving = self._leaving, []
                    for stream in self._batch:
                        if stream.pending_morph is not None:
                            stream.morph, stream.pending_morph = stream.pending_morph, None
                            self._composition += 1
                            if stream.morph.steps <= 0:
                                self._finish_morph(stream)
                            elif stream.morph.target.length > self._cross.length:
                                self._reserve_cross(stream.slot, stream.morph.target.length)
                for stream in leaving:
                    self._drop(stream)
                self._open_one()
                self._step_batch()

    def _finish(self, stream: EngineStream, frame: torch.Tensor | None, failure: str | None = None):
        with self._condition:
            if failure is not None:
                stream.failure = failure
            else:
                stream.outputs.append(frame)
                stream.produced += 1
                if (stream.produced == stream.allowed - self.prefetch_steps
                        and self.on_request_done is not None):
                    self.on_request_done()
            self._condition.notify_all()

    def _fail(self, stream: EngineStream, exc: BaseException):
        self._drop(stream)
        self._finish(stream, None, f'{type(exc).__name__}: {exc}')

    def _drop(self, stream: EngineStream):
        """Take ``stream`` out of the opening queue or the batch (its last stream fills the
        gap) and free what it holds."""
        if stream in self._opening:
            self._opening.remove(stream)
        if stream.slot is not None:
            slot, last = stream.slot, self._batch[-1]
            if last is not stream:
                rows = stream.rows
                self._cache.move(last.slot * rows, slot * rows, rows, last.codes.length)
                for index in range(len(self._cross.keys)):
                    self._cross.keys[index][slot * rows:(slot + 1) * rows] = \
                        self._cross.keys[index][last.slot * rows:(last.slot + 1) * rows]
                    self._cross.values[index][slot * rows:(slot + 1) * rows] = \
                        self._cross.values[index][last.slot * rows:(last.slot + 1) * rows]
                self._cross.bias[slot * rows:(slot + 1) * rows] = \
                    self._cross.bias[last.slot * rows:(last.slot + 1) * rows]
                self._batch[slot] = last
                last.slot = slot
            self._batch.pop()
            stream.slot = None
            self._composition += 1
        stream.private = None
        if stream.closed:
            stream.codes.release()

    # opening (prefill)

    def _open_one(self):
        """Run one prefill chunk of the first opening stream that may step."""
        for stream in list(self._opening):
            if stream.closed:
                self._opening.remove(stream)
                continue
            if not stream.wants_step():
                continue
            started = time.perf_counter()
            try:
                done = self._prefill_chunk(stream)
            except Exception as exc:  # noqa: BLE001 - this stream's failure, not the engine's
                self._fail(stream, exc)
                return
            self.stats.prefill_chunks += 1
            self.stats.prefill_seconds += time.perf_counter() - started
            if done:
                self._opening.remove(stream)
                try:
                    self._join(stream)
                except Exception as exc:  # noqa: BLE001 - no room for it (memory): it alone fails
                    self._fail(stream, exc)
            return

    def _prefill_chunk(self, stream: EngineStream) -> bool:
        """One chunk of ``stream``'s window prefix; True when the last chunk sampled."""
        codes = stream.codes
        if stream.private is None:
            if codes.full:
                codes.open_next()
            stream.private = PrivateCache(self.decoder.num_layers, self.decoder.scaling)
        first = stream.private.length
        end = min(codes.length, first + self.prefill_chunk)
        ids = codes.columns[:, first:end][None].expand(stream.rows, -1, -1)
        positions = torch.arange(first, end, device=self._device)[None].expand(stream.rows, -1)
        hidden = self.decoder.embed(ids, positions)
        # A retarget before the stream's first step, or a morph still running at a window
        # change: the new window starts on the new text.
        for morph in (stream.morph, stream.pending_morph):
            if morph is not None:
                stream.condition = morph.target
        stream.morph = stream.pending_morph = None
        logits = self.decoder.forward(hidden, stream.private, stream.condition)
        if end < codes.length:
            return False
        self._sample_and_record(stream, logits[:, :, -1])
        return True

    def _join(self, stream: EngineStream):
        rows = stream.rows
        slot = len(self._batch)
        self._cache.put(slot * rows, stream.private)
        stream.private = None
        self._put_cross(slot * rows, stream.condition)
        stream.slot = slot
        self._batch.append(stream)

    def _reserve_cross(self, slot: int, length: int):
        """Pad the batch's text inputs to ``length`` tokens (re-putting ``slot``'s own text)."""
        stream = self._batch[slot]
        self._put_cross(slot * stream.rows, stream.condition.padded(length))

    def _put_cross(self, first_row: int, condition: CrossKV):
        """Write ``condition`` into the batch's padded cross-attention inputs at ``first_row``."""
        self._composition += 1
        rows, length = condition.bias.shape[0], condition.length
        current = self._cross
        need_rows = first_row + rows
        if (current is None or current.bias.shape[0] < need_rows
                or current.length < length):
            have_rows = 0 if current is None else current.bias.shape[0]
            total_rows = max(need_rows, have_rows, self._cache.row_capacity)
            total_length = max(length, 0 if current is None else current.length)
            lowest = torch.finfo(self._dtype).min
            keys, values = [], []
            for index in range(self.decoder.num_layers):
                shape = (total_rows, self.decoder.heads, total_length, self.decoder.head_dim)
                for store, old in ((keys, None if current is None else current.keys[index]),
                                   (values, None if current is None else current.values[index])):
                    fresh = torch.zeros(shape, dtype=self._dtype, device=self._device)
                    if old is not None:
                        fresh[:old.shape[0], :, :old.shape[2]] = old
                    store.append(fresh)
            bias = torch.full((total_rows, 1, 1, total_length), lowest, dtype=self._dtype,
                              device=self._device)
            if current is not None:
                bias[:current.bias.shape[0], :, :, :current.length] = current.bias
            self._cross = current = CrossKV(tuple(keys), tuple(values), bias)
        for index in range(self.decoder.num_layers):
            current.keys[index][first_row:first_row + rows] = 0
            current.values[index][first_row:first_row + rows] = 0
            current.keys[index][first_row:first_row + rows, :, :length] = condition.keys[index]
            current.values[index][first_row:first_row + rows, :, :length] = condition.values[index]
        current.bias[first_row:first_row + rows] = torch.finfo(self._dtype).min
        current.bias[first_row:first_row + rows, :, :, :length] = condition.bias

    # batched steps

    def _step_batch(self):
        batch = list(self._batch)
        if not any(stream.wants_step() for stream in batch):
            return
        # a stream whose window is full leaves the batch to open its next one
        for stream in [s for s in batch if s.codes.full]:
            self._drop(stream)
            self._opening.append(stream)
        batch = list(self._batch)
        if not batch:
            return
        started = time.perf_counter()
        try:
            logits = self._forward(0, len(batch), batch)
        except Exception:  # noqa: BLE001 - find the stream(s) that fail alone
            self._retry_alone(batch)
            return
        self._record_step(batch, logits, time.perf_counter() - started)

    def _forward(self, first: int, end: int, batch: list[EngineStream]) -> torch.Tensor:
        rows = batch[0].rows
        streams = batch[first:end]
        ids = torch.stack([s.codes.columns[:, s.codes.length - 1] for s in streams])
        positions = torch.tensor([s.codes.length - 1 for s in streams], device=self._device)
        ids = ids.repeat_interleave(rows, dim=0)[:, :, None]
        positions = positions.repeat_interleave(rows)
        row_range = slice(first * rows, end * rows)
        self._cache.select(row_range, positions)
        hidden = self.decoder.embed(ids, positions[:, None])
        cross = self._cross
        view = CrossKV(tuple(k[row_range] for k in cross.keys),
                       tuple(v[row_range] for v in cross.values), cross.bias[row_range])
        morph = None
        if any(s.morph is not None for s in streams):
            morph = self._morph_inputs(streams, rows, view)
        return self.decoder.forward(hidden, self._cache, view, morph)[:, :, -1]

    def _morph_inputs(self, streams, rows, view: CrossKV):
        """The target text of every row (a stream that is not morphing targets its own text,
        at weight 0) and the weights, for :meth:`DecoderPass.forward`. The targets are
        assembled once per batch composition, not at every step."""
        key = (self._composition, rows, view.bias.shape[0])
        if self._morph_targets is None or self._morph_targets[0] != key:
            keys, values = [], []
            targets = [None if s.morph is None else s.morph.target.padded(view.length)
                       for s in streams]
            for index in range(self.decoder.num_layers):
                keys.append(torch.cat([view.keys[index][i * rows:(i + 1) * rows] if t is None
                                       else t.keys[index] for i, t in enumerate(targets)]))
                values.append(torch.cat([view.values[index][i * rows:(i + 1) * rows] if t is None
                                         else t.values[index] for i, t in enumerate(targets)]))
            bias = torch.cat([view.bias[i * rows:(i + 1) * rows] if t is None else t.bias
                              for i, t in enumerate(targets)])
            self._morph_targets = (key, CrossKV(tuple(keys), tuple(values), bias))
        weight = torch.tensor([0.0 if s.morph is None else s.morph.weight() for s in streams],
                              device=self._device).repeat_interleave(rows)
        return self._morph_targets[1], weight

    def _retry_alone(self, batch: list[EngineStream]):
        for index, stream in enumerate(list(batch)):
            if stream.slot is None:
                continue
            try:
                logits = self._forward(stream.slot, stream.slot + 1, self._batch)
            except Exception as exc:  # noqa: BLE001 - this stream fails alone
                self._fail(stream, exc)
                continue
            self._record_step([stream], logits, None)

    def _record_step(self, streams: list[EngineStream], logits: torch.Tensor, seconds):
        rows = streams[0].rows
        stepped = 0
        for index, stream in enumerate(streams):
            if not stream.wants_step():
                continue
            try:
                self._sample_and_record(stream, logits[index * rows:(index + 1) * rows])
            except Exception as exc:  # noqa: BLE001 - this stream fails alone
                self._fail(stream, exc)
                continue
            stepped += 1
        if seconds is not None:
            self.stats.steps += 1
            self.stats.stream_steps += stepped
            self.stats.step_seconds += seconds
            self.stats.recent.append((len(streams), seconds))

    def _sample_and_record(self, stream: EngineStream, logits: torch.Tensor):
        """``logits`` (rows, num_codebooks, vocab) of ``stream``'s next column."""
        if stream.morph is not None:
            stream.morph.done += 1
            self.stats.morph_steps += 1
            if stream.morph.done >= stream.morph.steps:
                self._finish_morph(stream)
        tokens = sample(stream.processors, stream.ids_for_processors,
                        logits.reshape(-1, logits.shape[-1]), stream.generator)
        self._finish(stream, stream.codes.record(tokens))

    def _finish_morph(self, stream: EngineStream):
        stream.condition = stream.morph.target
        stream.morph = None
        self._composition += 1
        if stream.slot is not None:
            self._put_cross(stream.slot * stream.rows, stream.condition)
