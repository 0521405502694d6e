"""Incremental EnCodec decoding: turn MusicGen code frames into PCM as they arrive, decoding each
frame once instead of re-decoding the whole token history at every fragment.

The SEANet decoder inside EnCodec (transformers' ``EncodecDecoder``) is
``convolutions -> LSTM -> convolutions/transposed convolutions``. The convolution stacks have a
finite receptive field, so a sample can be computed exactly from a window of frames around it;
the LSTM carries state from the first frame on, so it is run step by step with its ``(h, c)``
state kept between calls. :class:`StreamingCodecDecoder` therefore splits the decoder at its
LSTM:

- each convolution stack is a :class:`_WindowedStage`: it re-runs only on the frames needed for
  the outputs that just became final (left context for its receptive field, nothing more), and
  holds back the outputs whose right-hand receptive field is not complete yet;
- the LSTM stage runs on new frames only, continuing from the saved state.

The samples it emits equal those of a one-shot ``audio_encoder.decode`` of all codes so far
(up to float rounding), except the last ``lookahead_frames`` frames, which stay pending until
later frames arrive: a one-shot decode pads the sequence end instead. Output is therefore exact
and sample-continuous across calls and costs O(new frames), not O(history).

:func:`decode_together` runs several streams' decoders as one batch when they stand at the
same point (the streams of a batching engine all finish a fragment at the same step), and
:class:`CodecBatcher` gathers the decodes that readers ask for at the same time into such
passes: one pass over 8 streams costs far less than 8 passes, each of which re-runs its left
context and pays the per-layer overhead of tiny convolutions.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.encodec.modeling_encodec import (EncodecConv1d, EncodecConvTranspose1d,
                                                          EncodecLSTM, EncodecModel,
                                                          EncodecResnetBlock)


class UnsupportedCodecError(ValueError):
    """The EnCodec model has a layout that cannot be decoded incrementally."""


def _conv_input_span(layer: EncodecConv1d, lo: int, hi: int) -> tuple[int, int]:
    """Input positions that output positions [lo, hi] of a stride-1 EnCodec convolution read."""
    stride = layer.conv.stride[0]
    if stride != 1:
        raise UnsupportedCodecError(
            f'EnCodec decoder convolution with stride {stride}: only stride 1 is supported')
    kernel = (layer.conv.kernel_size[0] - 1) * layer.conv.dilation[0] + 1
    padding_total = kernel - stride
    if layer.causal:
        pad_left = padding_total
    else:
        pad_left = padding_total - padding_total // 2
    return lo - pad_left, hi + (kernel - 1 - pad_left)


def _conv_transpose_input_span(layer: EncodecConvTranspose1d, lo: int, hi: int) -> tuple[int, int]:
    """Input positions that (trimmed) output positions [lo, hi] of an EnCodec transposed
    convolution receive contributions from."""
    kernel = layer.conv.kernel_size[0]
    stride = layer.conv.stride[0]
    padding_total = kernel - stride
    if layer.causal:
        pad_right = math.ceil(padding_total * layer.trim_right_ratio)
    else:
        pad_right = padding_total // 2
    pad_left = padding_total - pad_right
    # Input n writes raw outputs [n * stride, n * stride + kernel - 1]; raw = trimmed + pad_left.
    return math.ceil((lo + pad_left - kernel + 1) / stride), (hi + pad_left) // stride


def _input_span(layers, lo: int, hi: int) -> tuple[int, int]:
    """Input positions that outputs [lo, hi] of a sequence of decoder layers depend on."""
    for layer in reversed(list(layers)):
        if isinstance(layer, EncodecConv1d):
            lo, hi = _conv_input_span(layer, lo, hi)
        elif isinstance(layer, EncodecConvTranspose1d):
            lo, hi = _conv_transpose_input_span(layer, lo, hi)
        elif isinstance(layer, EncodecResnetBlock):
            block_lo, block_hi = _input_span(layer.block, lo, hi)
            short_lo, short_hi = _input_span([layer.shortcut], lo, hi)
            lo, hi = min(block_lo, short_lo), max(block_hi, short_hi)
        elif isinstance(layer, (nn.ELU, nn.Identity)):
            pass
        else:
            raise UnsupportedCodecError(
                f'EnCodec decoder layer {type(layer).__name__} is not supported for streaming')
    return lo, hi


def _upsampling(layers) -> int:
    factor = 1
    for layer in layers:
        if isinstance(layer, EncodecConvTranspose1d):
            factor *= layer.conv.stride[0]
        elif isinstance(layer, EncodecResnetBlock):
            factor *= _upsampling(layer.block)
    return factor


@dataclass(frozen=True)
class _Reach:
    """How a finite-receptive-field stage maps input frames to outputs: ``upsampling`` outputs per
    input frame; output ``j`` depends on input frames
    ``[j // upsampling - left, j // upsampling + right]``."""

    upsampling: int
    left: int
    right: int

    @classmethod
    def of(cls, layers: list) -> '_Reach':
        upsampling = _upsampling(layers)
        spans = [_input_span(layers, j, j) for j in range(upsampling)]
        return cls(upsampling, left=max(0, -min(lo for lo, _ in spans)),
                   right=max(0, max(hi for _, hi in spans)))


class CodecLayout:
    """What :class:`StreamingCodecDecoder` needs to know about an EnCodec decoder: where its LSTM
    sits and the reach of the convolution stacks around it. Working out the reach walks every
    layer for every output phase (tens of ms for musicgen-small), so a backend does it once and
    hands the layout to each stream's decoder. It holds numbers only, never the codec's weights.
    """

    def __init__(self, audio_encoder: EncodecModel):
        config = audio_encoder.config
        if config.chunk_length_s is not None:
            raise UnsupportedCodecError(
                'EnCodec with chunked decoding (chunk_length_s set) cannot be streamed; '
                'MusicGen codecs decode in one chunk')
        if config.norm_type != 'weight_norm':
            raise UnsupportedCodecError(
                f'EnCodec norm_type {config.norm_type!r} normalises over the whole sequence; '
                "only 'weight_norm' can be streamed")
        if config.audio_channels != 1:
            raise UnsupportedCodecError(
                f'EnCodec with {config.audio_channels} channels: only mono codecs are supported')
        layers = list(audio_encoder.decoder.layers)
        lstm_positions = [i for i, layer in enumerate(layers) if isinstance(layer, EncodecLSTM)]
        if len(lstm_positions) != 1:
            raise UnsupportedCodecError(
                f'expected one LSTM in the EnCodec decoder, found {len(lstm_positions)}')
        self.lstm_index = lstm_positions[0]
        self.before_lstm = _Reach.of(layers[:self.lstm_index])
        self.after_lstm = _Reach.of(layers[self.lstm_index + 1:])
        if self.before_lstm.upsampling != 1:
            raise UnsupportedCodecError('EnCodec decoder upsamples before its LSTM')
        self.hop_length = self.after_lstm.upsampling
        if self.hop_length != config.hop_length:
            raise UnsupportedCodecError(
                f'EnCodec decoder upsamples by {self.hop_length}, config says {config.hop_length}')
        self.lookahead_frames = self.before_lstm.right + self.after_lstm.right


class _WindowedStage:
    """A finite-receptive-field part of the decoder, run on a sliding window of its input frames.

    Inputs arrive in order; outputs are emitted in order, each exactly once, as soon as their
    right context (``reach``) has arrived.
    """

    def __init__(self, layers, reach: _Reach):
        self.layers = list(layers)
        self.upsampling, self.left, self.right = reach.upsampling, reach.left, reach.right
        self._inputs = None          # (1, channels, n) frames kept for the next window
        self._inputs_start = 0       # absolute index of self._inputs[..., 0]
        self._received = 0           # frames received so far
        self._emitted = 0            # outputs emitted so far

    def _run(self, first_frame: int, last_frame: int) -> torch.Tensor:
        """Outputs of input frames [first_frame, last_frame) computed on the frames held."""
        hidden = self._inputs[..., first_frame - self._inputs_start:last_frame - self._inputs_start]
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden

    def geometry(self) -> tuple:
        """What must be equal for stages of several streams to run as one batch."""
        return (self._inputs_start, self._received, self._emitted,
                None if self._inputs is None else tuple(self._inputs.shape[1:]))

    def push(self, frames: torch.Tensor | None) -> torch.Tensor | None:
        """Add input frames ``(batch, channels, n)`` (or none); return the outputs that became
        final, or None when none did."""
        if frames is not None and frames.shape[-1]:
            self._inputs = frames if self._inputs is None else torch.cat([self._inputs, frames], -1)
            self._received += frames.shape[-1]
        ready_end = max(0, self._received - self.right) * self.upsampling
        if ready_end <= self._emitted:
            return None
        first_frame = max(0, self._emitted // self.upsampling - self.left)
        outputs = self._run(first_frame, self._received)
        offset = first_frame * self.upsampling
        emitted = outputs[..., self._emitted - offset:ready_end - offset]
        self._emitted = ready_end
        keep_from = max(0, self._emitted // self.upsampling - self.left)
        self._inputs = self._inputs[..., keep_from - self._inputs_start:]
        self._inputs_start = keep_from
        return emitted


class _StatefulLSTM:
    """EnCodec's residual LSTM run chunk by chunk with its state carried over."""

    def __init__(self, layer: EncodecLSTM):
        self.lstm = layer.lstm
        self._state = None

    def push(self, frames: torch.Tensor | None) -> torch.Tensor | None:
        if frames is None:
            return None
        sequence = frames.permute(2, 0, 1)
        output, self._state = self.lstm(sequence, self._state)
        return (output + sequence).permute(1, 2, 0)


def _stacked(stages, attributes):
    """A stand-in stage holding the state of ``stages`` (same geometry) stacked on the batch
    dimension, and a function writing the stand-in's state back, one row each."""
    joint = object.__new__(type(stages[0]))
    joint.__dict__.update(stages[0].__dict__)
    for name, dim in attributes:
        states = [getattr(stage, name) for stage in stages]
        if states[0] is None:
            continue
        if isinstance(states[0], tuple):     # the LSTM's (h, c)
            setattr(joint, name, tuple(torch.cat(parts, dim) for parts in zip(*states)))
        else:
            setattr(joint, name, torch.cat(states, dim))

    def scatter():
        for index, stage in enumerate(stages):
            for key, value in joint.__dict__.items():
                if key not in dict(attributes):
                    stage.__dict__[key] = value
            for name, dim in attributes:
                state = getattr(joint, name)
                if state is None:
                    setattr(stage, name, None)
                elif isinstance(state, tuple):
                    setattr(stage, name, tuple(part.narrow(dim, index, 1).clone()
                                               for part in state))
                else:
                    setattr(stage, name, state.narrow(dim, index, 1).clone())
    return joint, scatter


class StreamingCodecDecoder:
    """Decodes MusicGen code frames ``(num_codebooks, n)`` to mono PCM incrementally.

    One instance per stream (it holds that stream's decoder state); the EnCodec module itself
    is shared and only read. Call from one thread at a time, under ``torch.inference_mode``.
    """

    def __init__(self, audio_encoder: EncodecModel, layout: CodecLayout | None = None):
        """``layout`` is ``CodecLayout(audio_encoder)``, worked out here when not given."""
        if layout is None:
            layout = CodecLayout(audio_encoder)
        layers = list(audio_encoder.decoder.layers)
        split = layout.lstm_index
        self._quantizer = audio_encoder.quantizer
        self._before_lstm = _WindowedStage(layers[:split], layout.before_lstm)
        self._lstm = _StatefulLSTM(layers[split])
        self._after_lstm = _WindowedStage(layers[split + 1:], layout.after_lstm)
        self.hop_length = layout.hop_length
        self.lookahead_frames = layout.lookahead_frames
        self.samples_emitted = 0
        self._discard = 0
        embed = self._quantizer.layers[0].codebook.embed
        self._empty = embed.new_zeros(0)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.ndim != 2 or not 1 <= codes.shape[0] <= len(self._quantizer.layers):
            raise ValueError(f'codes must have shape (n_codebooks <= {len(self._quantizer.layers)}, '
                             f'n_frames), got {tuple(codes.shape)}')
        embeddings = None
        if codes.shape[-1]:
            embeddings = self._quantizer.decode(codes[:, None, :])   # (1, dim, n)
        hidden = self._lstm.push(self._before_lstm.push(embeddings))
        output = self._after_lstm.push(hidden)
        if output is None:
            return self._empty
        return self._emit(output[0, 0])

    def prime(self, codes: torch.Tensor) -> None:
        """Feed frames whose audio the listener already has (a continuation's context): they set
        the decoder state, their own samples are never emitted."""
        self._discard += codes.shape[-1] * self.hop_length
        self._decode(codes)

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Add frames ``(num_codebooks, n)``; return the samples that became final (1-D, possibly
        empty)."""
        return self._decode(codes)

    def geometry(self, codes: torch.Tensor) -> tuple:
        """Decoders with equal geometries, pushed codes of one shape, can decode as a batch."""
        return (tuple(codes.shape), self._before_lstm.geometry(), self._after_lstm.geometry(),
                self._lstm._state is None)

    def _emit(self, audio: torch.Tensor) -> torch.Tensor:
        if self._discard:
            dropped = min(self._discard, audio.shape[-1])
            audio = audio[dropped:]
            self._discard -= dropped
        self.samples_emitted += audio.shape[-1]
        return audio


def decode_together(decoders: list, codes: list) -> list:
    """``decoders[i].push(codes[i])`` for every i, as one batched pass where their geometries
    match (:meth:`StreamingCodecDecoder.geometry`), else one by one. The samples equal those
    of separate pushes up to float rounding (a convolution over a batch may sum in another
    order)."""
    groups: dict = {}
    for index, (decoder, frames) in enumerate(zip(decoders, codes)):
        groups.setdefault(decoder.geometry(frames), []).append(index)
    results = [None] * len(decoders)
    for indices in groups.values():
        if len(indices) == 1 or codes[indices[0]].shape[-1] == 0:
            for index in indices:
                results[index] = decoders[index].push(codes[index])
            continue
        group = [decoders[index] for index in indices]
        first = group[0]
        if not all(decoder._quantizer is first._quantizer for decoder in group):
            raise ValueError('decode_together: decoders of different codecs')
        batch = torch.stack([codes[index] for index in indices], dim=1)   # (n_q, B, n)
        before, scatter_before = _stacked([d._before_lstm for d in group], [('_inputs', 0)])
        lstm, scatter_lstm = _stacked([d._lstm for d in group], [('_state', 1)])
        after, scatter_after = _stacked([d._after_lstm for d in group], [('_inputs', 0)])
        output = after.push(lstm.push(before.push(first._quantizer.decode(batch))))
        scatter_before()
        scatter_lstm()
        scatter_after()
        for row, index in enumerate(indices):
            audio = first._empty if output is None else output[row, 0]
            results[index] = decoders[index]._emit(audio) if output is not None else audio
    return results


class CodecBatcher:
    """Decodes what several threads ask for at about the same time in one pass.

    A thread's :meth:`push` queues its request and waits for the pass lock; the thread that
    gets it decodes every request queued by then (:func:`decode_together`), so a thread may
    find its own request done by another's pass. One pass runs at a time, which also keeps
    concurrent decodes from oversubscribing the cores. :meth:`expect` announces a request
    about to come (the engine calls it when it wakes a reader): a pass waits for the announced
    requests, up to ``gather_s``, so that readers woken by one engine step share one pass.
    """

    def __init__(self, gather_s: float = 0.05):
        self._pass_lock = threading.Lock()
        self._queue_changed = threading.Condition()
        self._queue: list = []
        self._expected = 0
        self.gather_s = gather_s
        self.passes = 0
        self.decodes = 0

    def expect(self) -> None:
        with self._queue_changed:
            self._expected += 1

    def push(self, decoder: StreamingCodecDecoder, codes: torch.Tensor) -> torch.Tensor:
        request = {'decoder': decoder, 'codes': codes}
        with self._queue_changed:
            self._queue.append(request)
            self._expected = max(0, self._expected - 1)
            self._queue_changed.notify_all()
        with self._pass_lock:
            if 'result' not in request and 'error' not in request:
                with self._queue_changed:
                    if not self._queue_changed.wait_for(lambda: self._expected == 0,
                                                        timeout=self.gather_s):
                        self._expected = 0      # a reader that went away: do not wait again
                    batch, self._queue = self._queue, []
                try:
                    results = decode_together([r['decoder'] for r in batch],
                                              [r['codes'] for r in batch])
                except Exception:  # noqa: BLE001 - find whose decode fails: each alone
                    results = None
                for position, queued in enumerate(batch):
                    if results is not None:
                        queued['result'] = results[position]
                        continue
                    try:
                        queued['result'] = queued['decoder'].push(queued['codes'])
                    except Exception as exc:  # noqa: BLE001 - handed to its own thread
                        queued['error'] = exc
                self.passes += 1
                self.decodes += len(batch)
        if 'error' in request:
            raise request['error']
        return request['result']
