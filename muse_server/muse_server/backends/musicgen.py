"""The ``musicgen`` backend: transformers' MusicGen streaming PCM while it generates.

Code frames come from the decoding loop of ``generate`` run step by step and without end: by
default in the backend's :class:`~.musicgen_engine.BatchEngine`, which steps every open stream
together in one forward pass (continuous batching), or (``batching=False``) per stream through
a :class:`~.musicgen_generation.CodeGenerator` on transformers' decoder. Per stream, one
:class:`~.musicgen_codec.StreamingCodecDecoder` turns each new frame into samples once, in the
reader's thread. Every
:meth:`MusicGenStream.next_fragment` runs ``play_steps`` decoder steps and returns the audio of
the frames they completed, float32 ``(n, 1)`` at 32 kHz: ``play_steps`` frames
(``play_steps / 50`` s). A stream's first fragment is shorter by ``num_codebooks - 1`` frames
(the delay pattern completes a frame 4 steps after it starts) plus the codec's look-ahead
(``lookahead_frames``: 4 frames for EnCodec 32 kHz), 7 frames in all for musicgen-small; a
fragment that spans a window change is ``num_codebooks - 1`` frames shorter.

Continuity:

- within a stream, a generation window that is full (``window_tokens``, 1503 by default: 30 s)
  is followed by a new one prompted with the last ``continuation_s`` seconds of codes; the codec
  decoder runs on across windows, so the audio has no seam other than what the model samples;
- at a prompt change, ``open_stream(prompt, context)`` encodes ``context`` (the audio already
  sent; its last ``context_s`` seconds at most) with EnCodec and uses the codes both as the new
  stream's decoder prompt (the new text continues the old music instead of starting over) and
  to prime the codec decoder's state, so the first new samples continue the old waveform.

Concurrency: the backend is shared by all sessions. Batched, ``next_fragment`` waits for the
engine thread to have stepped its stream ``play_steps`` times (a seeded stream samples the same
tokens in a batch as alone); serial, streams take turns on the model one decoder step at a time
through a FIFO lock (served in arrival order). Under load, fragments may grow for every stream
(``play_steps`` up to ``max_fragment_s``, :class:`~muse_server.capacity.PlayStepsGovernor`)
and shrink back when the load drops. ``retarget`` moves a running stream to a new
text without a new piece: batched, over ``morph_s`` seconds (cross-attention of old and new
text mixed with a rising weight); serial, at once. :meth:`MusicGenBackend.load` says how many
streams the measured step times carry in real time (the server's admission).

Importing this module needs torch and transformers, never rclpy.
"""

from __future__ import annotations

import collections
import logging
import math
import secrets
import statistics
import threading
import time

import numpy as np
import torch

from muse_server.backends.base import BackendError, MusicBackend, MusicStream, PromptSpec
from muse_server.backends.musicgen_codec import (CodecBatcher, CodecLayout,
                                                 StreamingCodecDecoder, UnsupportedCodecError)
from muse_server.backends.musicgen_engine import BatchEngine, EngineStream, StreamFailed
from muse_server.backends.musicgen_generation import (CodeGenerator, CodeWindows,
                                                            SamplingOptions, TextCondition,
                                                            encode_audio, encode_text)
from muse_server.capacity import (BackendLoad, PlayStepsGovernor, realtime_streams,
                                  step_time_model)

DEFAULT_MODEL = 'facebook/musicgen-small'
DEFAULT_PLAY_STEPS = 50             # 1 s of audio per fragment at 50 frames/s
DEFAULT_WINDOW_TOKENS = 1503        # MusicGen's 30 s limit: 1500 frames + delay-pattern columns
logger = logging.getLogger('muse_music_server')
_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16, 'float32': torch.float32}


class MusicGenInputError(BackendError, ValueError):
    """An option or an input the musicgen backend cannot accept (names it and what was
    expected)."""


class _FifoLock:
    """A lock granted in the order it was asked for, so a stream that releases the model after
    each step cannot starve another one waiting for it."""

    def __init__(self):
        self._condition = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._abandoned = set()

    def __enter__(self):
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                self._condition.wait_for(lambda: self._serving == ticket)
            except BaseException:
                # Interrupted while queuing: give the turn away, or it would never come back.
                if self._serving == ticket:
                    self._advance()
                else:
                    self._abandoned.add(ticket)
                raise
        return self

    def __exit__(self, *exc_info):
        with self._condition:
            self._advance()

    def _advance(self):
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.remove(self._serving)
            self._serving += 1
        self._condition.notify_all()


def _resolve_device(device) -> torch.device:
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MusicGenInputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if resolved.type == 'cuda' and not torch.cuda.is_available():
        raise MusicGenInputError(f'device {device!r} asked for, but CUDA is not available here')
    return resolved


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype == 'auto':
        return torch.float16 if device.type == 'cuda' else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise MusicGenInputError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")


def _positive_seconds(name: str, value, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        expected = '>= 0' if allow_zero else '> 0'
        raise MusicGenInputError(f'{name} must be a finite number of seconds {expected}, got {value!r}')
    return float(value)


def load_musicgen(model_id: str, dtype: torch.dtype):
    """Load a MusicGen model (in ``dtype``) and its processor from a hub id or a local
    directory."""
    from transformers import AutoProcessor, MusicgenForConditionalGeneration
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(model_id, dtype=dtype)
        processor = AutoProcessor.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise BackendError(f'cannot load MusicGen model {model_id!r} (a hub id or a directory '
                           f'saved with save_pretrained): {exc}') from exc
    return model, processor


class _SerialSource:
    """Steps one :class:`CodeGenerator` through transformers' decoder, one stream per forward
    pass, taking turns on the model through the backend's FIFO lock (the path before
    batching; ``batching=False``)."""

    def __init__(self, backend: 'MusicGenBackend', generator: CodeGenerator):
        self._backend = backend
        self._generator = generator
        self.steps = 0

    @property
    def windows(self) -> int:
        return self._generator.windows

    def take(self, steps: int) -> list[torch.Tensor]:
        frames = []
        for _ in range(steps):
            with self._backend.model_lock:
                started = time.perf_counter()
                frames.append(self._generator.step())
                seconds = time.perf_counter() - started
                self._backend.serial_step_seconds.append(seconds)
                self._backend.serial_seconds_total += seconds
            self.steps += 1
        return frames

    def retarget(self, condition: TextCondition) -> None:
        with self._backend.model_lock:
            self._generator.retarget(condition)

    def close(self) -> None:
        self._generator.release()


class _EngineSource:
    """A stream of the backend's :class:`BatchEngine`: steps run in the engine's batch."""

    def __init__(self, engine: BatchEngine, handle: EngineStream):
        self._engine = engine
        self._handle = handle

    @property
    def steps(self) -> int:
        return self._handle.taken

    @property
    def windows(self) -> int:
        return self._handle.codes.windows

    def take(self, steps: int) -> list[torch.Tensor]:
        try:
            return self._engine.take(self._handle, steps)
        except StreamFailed as exc:
            raise BackendError(str(exc)) from None

    def close(self) -> None:
        self._engine.remove(self._handle)


class MusicGenStream(MusicStream):
    """One continuous MusicGen piece; made by :meth:`MusicGenBackend.open_stream`."""

    def __init__(self, backend: 'MusicGenBackend', source, codec: StreamingCodecDecoder):
        self._backend = backend
        self._source = source
        self._codec = codec
        self._closed = False
        self._failure = None
        self._fragments = 0

    @property
    def decoder_steps(self) -> int:
        """Decoder steps whose frames this stream has taken (prefills included)."""
        return self._source.steps

    @property
    def windows(self) -> int:
        """Generation windows opened so far (1 + continuations)."""
        return self._source.windows

    def next_fragment(self) -> np.ndarray:
        if self._closed:
            raise BackendError('next_fragment() on a closed musicgen stream')
        if self._failure is not None:
            # Steps of the failed call are lost: going on would leave a gap in the music.
            raise BackendError(f'this musicgen stream failed earlier ({self._failure}); open a new one')
        try:
            with torch.inference_mode():
                audio = None
                while audio is None or audio.numel() == 0:
                    play_steps = self._backend.play_steps
                    started = self._backend.clock()
                    frames = self._source.take(play_steps)
                    audio = self._backend.decode(self._codec, torch.cat(frames, dim=-1))
                    pcm = audio.float().cpu().numpy()
                    if self._fragments:  # a stream's first fragment includes its opening
                        self._backend.fragment_made(play_steps, self._backend.clock() - started)
                    self._fragments += 1
        except Exception as exc:  # noqa: BLE001 - any model failure is reported as the contract's error
            self._failure = f'{type(exc).__name__}: {exc}'
            raise BackendError(f'musicgen generation failed: {self._failure}') from exc
        return np.clip(pcm, -1.0, 1.0).astype(np.float32, copy=False).reshape(-1, 1)

    def retarget(self, prompt: PromptSpec) -> bool:
        """Steer this stream to ``prompt``'s text from its next step on, keeping its tokens and
        KV cache: batched, the text morphs over the backend's ``morph_s``; serial, it switches
        at once."""
        if not isinstance(prompt, PromptSpec):
            raise MusicGenInputError(f'prompt must be a PromptSpec, got {type(prompt).__name__}')
        if self._closed or self._failure is not None:
            return False
        with torch.inference_mode():
            condition = self._backend._text_condition(prompt.text)
            if isinstance(self._source, _SerialSource):
                self._source.retarget(condition)
            else:
                self._backend.engine.retarget(self._source._handle,
                                              self._backend._cross_condition(prompt.text),
                                              self._backend.morph_steps)
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._source.close()
            self._codec = None
            with self._backend._text_lock:
                self._backend._open_streams -= 1


class MusicGenBackend(MusicBackend):
    """MusicGen behind the server's backend contract.

    ``model`` is a hub id or local directory (loaded with
    ``MusicgenForConditionalGeneration.from_pretrained`` + ``AutoProcessor``), or an already
    built ``MusicgenForConditionalGeneration`` given together with ``processor`` (a
    ``MusicgenProcessor`` or the tokenizer alone) — see :meth:`from_model`.

    Options: ``device`` ('auto': CUDA when present), ``dtype`` ('auto': float16 on CUDA,
    float32 on CPU); ``play_steps`` decoder steps per fragment, or ``fragment_s`` seconds (the
    server's option; not both); sampling ``guidance_scale`` (1 = off), ``top_k`` (0 = off),
    ``temperature``; ``context_s``: at most this many seconds of a new stream's ``context``
    (the server decides how much it sends) become its audio prompt; ``continuation_s`` seconds
    of codes prompt each next window; ``window_tokens`` decoder positions per window;
    ``seed`` (None: random) — stream ``i`` of a seeded backend samples with seed ``seed + i``;
    ``text_cache_size`` encoded prompts kept; ``batching`` (default True): every stream is
    stepped in one :class:`~.musicgen_engine.BatchEngine` pass with the others (False: each
    stream takes its turn on the model alone, behind a FIFO lock); ``morph_s`` seconds over which
    :meth:`MusicGenStream.retarget` moves a batched stream to its new text; ``prefill_chunk``
    decoder columns of a window's prefix per engine iteration; ``max_fragment_s`` (default
    None: fixed fragments) the longest fragment the backend grows to while its fragments come
    slower than ``realtime_margin`` times real time (the server's ``max_ahead_s`` should hold
    two of them).
    """

    name = 'musicgen'

    def __init__(self, model=DEFAULT_MODEL, device='auto', dtype='auto', *, processor=None,
                 play_steps: int | None = None, fragment_s: float | None = None,
                 guidance_scale: float = 3.0, top_k: int = 250, temperature: float = 1.0,
                 context_s: float = 10.0, continuation_s: float = 10.0,
                 window_tokens: int | None = None, seed: int | None = None,
                 text_cache_size: int = 16, batching: bool = True, morph_s: float = 2.0,
                 prefill_chunk: int = 256, max_fragment_s: float | None = None):
        from transformers import MusicgenForConditionalGeneration

        try:
            self.sampling = SamplingOptions(guidance_scale, top_k, temperature)
        except ValueError as exc:
            raise MusicGenInputError(str(exc)) from None
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        if isinstance(model, str):
            if processor is not None:
                raise MusicGenInputError('processor is only given with a built model; a model id '
                                         'or path loads its own processor')
            model, processor = load_musicgen(model, self.dtype)
        elif not isinstance(model, MusicgenForConditionalGeneration):
            raise MusicGenInputError(f'model must be a hub id, a local path or a '
                                     f'MusicgenForConditionalGeneration, got {type(model).__name__}')
        elif processor is None:
            raise MusicGenInputError('a built model needs its processor (or tokenizer) too')
        self._tokenizer = getattr(processor, 'tokenizer', processor)
        if not callable(self._tokenizer):
            raise MusicGenInputError(f'processor must be a MusicgenProcessor or a tokenizer, got '
                                     f'{type(processor).__name__}')
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._check_model()

        codec_config = self.model.audio_encoder.config
        self.sample_rate = int(codec_config.sampling_rate)
        self.channels = 1
        self.hop_length = int(codec_config.hop_length)
        self.frame_rate = self.sample_rate / self.hop_length
        self.num_codebooks = self.model.decoder.num_codebooks
        max_positions = self.model.decoder.config.max_position_embeddings

        if play_steps is not None and fragment_s is not None:
            raise MusicGenInputError('give play_steps or fragment_s, not both')
        if fragment_s is not None:
            play_steps = max(1, round(_positive_seconds('fragment_s', fragment_s) * self.frame_rate))
        elif play_steps is None:
            play_steps = DEFAULT_PLAY_STEPS
        if isinstance(play_steps, bool) or not isinstance(play_steps, int) or play_steps < 1:
            raise MusicGenInputError(f'play_steps must be an int >= 1, got {play_steps!r}')
        max_play_steps = play_steps
        if max_fragment_s is not None:
            max_play_steps = round(_positive_seconds('max_fragment_s', max_fragment_s)
                                   * self.frame_rate)
            if max_play_steps < play_steps:
                raise MusicGenInputError(
                    f'max_fragment_s must be at least the fragment ({play_steps} steps = '
                    f'{play_steps / self.frame_rate:g} s), got {max_fragment_s!r}')
        self.realtime_margin = 1.2
        self.play_steps_governor = PlayStepsGovernor(play_steps, max_play_steps, self.frame_rate,
                                                     grow_below=self.realtime_margin)
        self._governor_lock = threading.Lock()
        self.clock = time.perf_counter  # times fragments for the governor (tests: a fake)

        if window_tokens is None:
            window_tokens = min(DEFAULT_WINDOW_TOKENS, max_positions)
        if (isinstance(window_tokens, bool) or not isinstance(window_tokens, int)
                or not 2 * self.num_codebooks + 2 <= window_tokens <= max_positions):
            raise MusicGenInputError(f'window_tokens must be an int in [{2 * self.num_codebooks + 2}, '
                                     f'{max_positions}] (the decoder positions), got {window_tokens!r}')
        self.window_tokens = window_tokens
        most_prompt_frames = window_tokens - self.num_codebooks - 2
        self.context_frames = round(_positive_seconds('context_s', context_s, allow_zero=True)
                                    * self.frame_rate)
        self.continuation_frames = max(1, round(_positive_seconds('continuation_s', continuation_s)
                                                * self.frame_rate))
        for name, frames in (('context_s', self.context_frames),
                             ('continuation_s', self.continuation_frames)):
            if frames > most_prompt_frames:
                raise MusicGenInputError(
                    f'{name} is {frames / self.frame_rate:g} s ({frames} frames), but a window of '
                    f'{window_tokens} tokens holds at most {most_prompt_frames} prompt frames')
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise MusicGenInputError(f'seed must be an int >= 0 or None, got {seed!r}')
        self._seed = seed
        if isinstance(text_cache_size, bool) or not isinstance(text_cache_size, int) or text_cache_size < 0:
            raise MusicGenInputError(f'text_cache_size must be an int >= 0, got {text_cache_size!r}')
        self._text_cache_size = text_cache_size
        self._text_cache: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._text_lock = threading.Lock()
        self._streams_opened = 0
        self.model_lock = _FifoLock()
        self.lookahead_frames = self._codec_layout.lookahead_frames
        self.morph_steps = round(_positive_seconds('morph_s', morph_s, allow_zero=True)
                                 * self.frame_rate)
        if isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int) or prefill_chunk < 1:
            raise MusicGenInputError(f'prefill_chunk must be an int >= 1, got {prefill_chunk!r}')
        if not isinstance(batching, bool):
            raise MusicGenInputError(f'batching must be True or False, got {batching!r}')
        # Batched, the readers all finish their fragment at the same engine step: their codec
        # decodes run as one pass (as many concurrent decodes, each with its own intra-op
        # thread team, oversubscribed the cores the engine's next pass needs). Serial, each
        # reader decodes its own, as before batching.
        self.codec_batcher = CodecBatcher() if batching else None
        self.engine = (BatchEngine(self.model, prefill_chunk=prefill_chunk,
                                   on_request_done=self.codec_batcher.expect)
                       if batching else None)
        self.serial_step_seconds = collections.deque(maxlen=256)
        self.serial_seconds_total = 0.0     # in decoder steps of serial streams, ever
        self._open_streams = 0

    @property
    def play_steps(self) -> int:
        """Decoder steps in every stream's next fragment (grown under load, see
        :class:`~muse_server.capacity.PlayStepsGovernor`)."""
        return self.play_steps_governor.play_steps

    def decode(self, codec: StreamingCodecDecoder, codes: torch.Tensor) -> torch.Tensor:
        """``codec.push(codes)``, batched with other readers' decodes when batching."""
        if self.codec_batcher is None:
            return codec.push(codes)
        return self.codec_batcher.push(codec, codes)

    def fragment_made(self, steps: int, seconds: float) -> None:
        """A stream made a fragment of ``steps`` steps in ``seconds`` (its reader's wall time,
        engine wait and codec included): the governor may resize every stream's fragments."""
        with self._governor_lock:
            before = self.play_steps
            size = self.play_steps_governor.observe(steps, seconds)
        if size is not None:
            logger.info('musicgen fragments: %d -> %d decoder steps (recent fragments at %.2fx '
                        'real time; grow below %gx, shrink above %gx)', before, size,
                        steps / self.frame_rate / seconds, self.play_steps_governor.grow_below,
                        self.play_steps_governor.shrink_above)

    @classmethod
    def from_model(cls, model, processor, **options) -> 'MusicGenBackend':
        """A backend around an already built ``MusicgenForConditionalGeneration`` and its
        processor or tokenizer (tests build tiny random-weight models this way)."""
        return cls(model=model, processor=processor, **options)

    def _check_model(self) -> None:
        decoder_config = self.model.decoder.config
        if decoder_config.audio_channels != 1:
            raise MusicGenInputError(f'only mono MusicGen models are supported, this one has '
                                     f'{decoder_config.audio_channels} audio channels')
        generation_config = self.model.generation_config
        if generation_config.decoder_start_token_id is None:
            generation_config.decoder_start_token_id = generation_config.bos_token_id
        if generation_config.decoder_start_token_id is None:
            raise MusicGenInputError('the model has neither decoder_start_token_id nor bos_token_id '
                                     'in its generation config')
        try:
            # worked out once here: every stream's decoder reuses it
            self._codec_layout = CodecLayout(self.model.audio_encoder)
        except UnsupportedCodecError as exc:
            raise MusicGenInputError(f'the model audio codec cannot be streamed: {exc}') from None

    def _encoded(self, text: str) -> list:
        """``[TextCondition, CrossKV or None]`` of ``text``, from the cache when the same text
        came before (call under inference mode)."""
        with self._text_lock:
            entry = self._text_cache.get(text)
            if entry is not None:
                self._text_cache.move_to_end(text)
                return entry
            entry = [encode_text(self.model, self._tokenizer, text, self.sampling.guided), None]
            if self._text_cache_size:
                self._text_cache[text] = entry
                while len(self._text_cache) > self._text_cache_size:
                    self._text_cache.popitem(last=False)
            return entry

    def _text_condition(self, text: str) -> TextCondition:
        return self._encoded(text)[0]

    def _cross_condition(self, text: str):
        """The cross-attention keys and values of ``text`` for the batching engine."""
        entry = self._encoded(text)
        if entry[1] is None:
            condition = entry[0]
            entry[1] = self.engine.decoder.cross_kv(condition.hidden, condition.mask)
        return entry[1]

    def _context_audio(self, context) -> torch.Tensor | None:
        """The whole frames at the end of ``context`` that prompt a new stream, or None."""
        if context is None or self.context_frames == 0:
            return None
        if not isinstance(context, np.ndarray) or not np.issubdtype(context.dtype, np.floating):
            raise MusicGenInputError(f'context must be a float numpy array (n, {self.channels}), '
                                     f'got {type(context).__name__}'
                                     f'{" of " + str(context.dtype) if isinstance(context, np.ndarray) else ""}')
        if context.ndim != 2 or context.shape[1] != self.channels:
            raise MusicGenInputError(f'context must have shape (n, {self.channels}), got {context.shape}')
        if not np.isfinite(context).all():
            raise MusicGenInputError('context contains NaN or infinite samples')
        frames = min(context.shape[0] // self.hop_length, self.context_frames)
        if frames == 0:
            return None
        tail = np.ascontiguousarray(context[context.shape[0] - frames * self.hop_length:, 0])
        return torch.from_numpy(tail).to(device=self.device, dtype=self.dtype)

    def open_stream(self, prompt: PromptSpec, context: np.ndarray | None = None) -> MusicGenStream:
        if not isinstance(prompt, PromptSpec):
            raise MusicGenInputError(f'prompt must be a PromptSpec, got {type(prompt).__name__}')
        if self.model is None:
            raise BackendError('open_stream() on a closed musicgen backend')
        context_audio = self._context_audio(context)
        try:
            with torch.inference_mode():
                with self._text_lock:
                    stream_index = self._streams_opened
                    self._streams_opened += 1
                seed = secrets.randbits(63) if self._seed is None else self._seed + stream_index
                generator = torch.Generator(device=self.device).manual_seed(seed)
                if self.engine is None:
                    with self.model_lock:
                        condition = self._text_condition(prompt.text)
                        prompt_codes = (None if context_audio is None
                                        else encode_audio(self.model, context_audio))
                        source = _SerialSource(self, CodeGenerator(
                            self.model, condition, self.sampling, generator,
                            window_tokens=self.window_tokens,
                            continuation_frames=self.continuation_frames,
                            prompt_codes=prompt_codes))
                else:
                    cross = self._cross_condition(prompt.text)
                    prompt_codes = (None if context_audio is None
                                    else encode_audio(self.model, context_audio))
                    codes = CodeWindows(self.model.decoder,
                                        self.model.generation_config.decoder_start_token_id,
                                        self.window_tokens, self.continuation_frames,
                                        prompt_codes, self.device)
                    handle = EngineStream(codes=codes, condition=cross, sampling=self.sampling,
                                          generator=generator,
                                          rows=2 if self.sampling.guided else 1)
                codec = StreamingCodecDecoder(self.model.audio_encoder, self._codec_layout)
                if prompt_codes is not None:
                    codec.prime(prompt_codes)
                if self.engine is not None:
                    source = _EngineSource(self.engine, self.engine.add(handle))
        except Exception as exc:  # noqa: BLE001 - reported as the contract's error
            raise BackendError(f'musicgen could not open a stream for prompt '
                               f'{prompt.prompt_id}: {type(exc).__name__}: {exc}') from exc
        with self._text_lock:
            self._open_streams += 1
        return MusicGenStream(self, source, codec)

    def load(self) -> BackendLoad:
        """Streams open and how many this backend steps in real time (for admission).

        Batched: from the engine's recent (batch size, seconds) passes; serial: streams take
        turns, so n streams each get one step per n single-stream steps."""
        if self.engine is not None:
            model = step_time_model(self.engine.stats.recent)
            how = 'batched steps'
        else:
            samples = list(self.serial_step_seconds)
            single = statistics.median(samples) if samples else None
            model = None if single is None else (lambda n: n * single)
            how = 'serial steps'
        streams = self._open_streams
        governor = self.play_steps_governor
        rtf = governor.fragment_rtf
        fragments = dict(play_steps=governor.play_steps, play_steps_base=governor.base,
                         play_steps_max=governor.most,
                         fragment_rtf=None if rtf is None else round(rtf, 3))
        if model is None:
            return BackendLoad(streams, None, None, self.frame_rate, self.realtime_margin,
                               'no step measured yet', **fragments)
        carried = realtime_streams(model, self.frame_rate, self.realtime_margin)
        detail = (f'{how}: {model(1) * 1e3:.1f} ms for 1 stream, '
                  f'{model(max(streams, 2)) * 1e3:.1f} ms for {max(streams, 2)}; '
                  f'{self.frame_rate:g} steps/s per stream needed')
        return BackendLoad(streams, carried, round(1.0 / model(max(streams, 1)), 3),
                           self.frame_rate, self.realtime_margin, detail, **fragments)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()
        with self.model_lock:
            self.model = None
            self._text_cache.clear()
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
