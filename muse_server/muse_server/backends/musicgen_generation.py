"""MusicGen token generation without end: the decoding loop of transformers'
``MusicgenForConditionalGeneration.generate`` taken apart so it can run step by step, keep going
past one generation window, and start from audio codes.

What it keeps from ``generate`` (so that, for the same seed, the tokens are the same):

- the delay pattern (``decoder.build_delay_pattern_mask`` / the same masking of each new column),
- classifier-free guidance as ``generate`` does it: the text encoder's output is followed by an
  all-zero "null" copy with a zero attention mask, the decoder runs both as one batch of two,
  and :class:`ClassifierFreeGuidanceLogitsProcessor` mixes the logits, followed by the
  temperature and top-k warpers in ``generate``'s order, ``softmax`` and ``torch.multinomial``;
- the decoder's own KV cache (``EncoderDecoderCache`` of ``DynamicCache``), one forward per step.

What it does differently, and why:

- the text encoder runs once per prompt (:func:`encode_text`); the projection to the decoder
  width and the attention-mask multiplication that ``forward`` repeats at every step are done
  once there too;
- no host synchronisation per step: tokens stay on the device, frame bookkeeping is index
  arithmetic, so a GPU can queue steps ahead of Python;
- a window that is full is followed by a new one whose decoder prompt is the last frames of
  codes already produced (audio-prompted continuation on exact codes, no re-encoding);
- sampling draws from a per-stream ``torch.Generator``, so concurrent streams do not disturb
  each other's randomness and a seeded stream is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation import (ClassifierFreeGuidanceLogitsProcessor, LogitsProcessorList,
                                     TemperatureLogitsWarper, TopKLogitsWarper)


@dataclass(frozen=True)
class SamplingOptions:
    """How each token is drawn. ``guidance_scale`` 1 turns classifier-free guidance off;
    ``top_k`` 0 keeps the whole vocabulary."""

    guidance_scale: float = 3.0
    top_k: int = 250
    temperature: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.guidance_scale, (int, float)) and self.guidance_scale >= 1.0):
            raise ValueError(f'guidance_scale must be a number >= 1 (1 = no guidance), '
                             f'got {self.guidance_scale!r}')
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f'top_k must be an int >= 0 (0 = no top-k filter), got {self.top_k!r}')
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0.0):
            raise ValueError(f'temperature must be a number > 0, got {self.temperature!r}')

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def logits_processors(self) -> LogitsProcessorList:
        """The processors ``generate`` would build for these options, in its order."""
        processors = LogitsProcessorList()
        if self.guided:
            processors.append(ClassifierFreeGuidanceLogitsProcessor(float(self.guidance_scale)))
        if self.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=self.top_k))
        return processors


@dataclass(frozen=True)
class TextCondition:
    """Cross-attention input for one prompt: ``hidden`` ``(batch, tokens, decoder_width)``,
    already projected and masked, with the null copy appended when guided; ``mask`` its
    attention mask."""

    hidden: torch.Tensor
    mask: torch.Tensor


def encode_text(model, tokenizer, text: str, guided: bool) -> TextCondition:
    """Run the text encoder once for ``text`` (call under ``torch.inference_mode``)."""
    tokens = tokenizer([text], padding=True, return_tensors='pt')
    input_ids = tokens['input_ids'].to(model.device)
    mask = tokens['attention_mask'].to(model.device)
    hidden = model.text_encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
    if guided:
        hidden = torch.cat([hidden, torch.zeros_like(hidden)], dim=0)
        mask = torch.cat([mask, torch.zeros_like(mask)], dim=0)
    if (model.text_encoder.config.hidden_size != model.decoder.config.hidden_size
            and model.decoder.config.cross_attention_hidden_size is None):
        hidden = model.enc_to_dec_proj(hidden)
    hidden = hidden * mask[..., None]
    return TextCondition(hidden=hidden, mask=mask)


def encode_audio(model, audio: torch.Tensor) -> torch.Tensor:
    """EnCodec codes ``(num_codebooks, n_frames)`` of mono ``audio`` (1-D, at the codec's rate)."""
    codes = model.audio_encoder.encode(audio.reshape(1, 1, -1)).audio_codes   # (1, 1, cb, n)
    num_codebooks = model.decoder.num_codebooks
    if codes.shape[2] != num_codebooks:
        raise ValueError(f'the audio encoder produced {codes.shape[2]} codebooks, the decoder '
                         f'expects {num_codebooks}')
    return codes[0, 0]


class CodeWindows:
    """The token bookkeeping of one endless stream: the delay-pattern columns of the current
    window, which of them are sampled, and the move to a new window prompted with the last
    ``continuation_frames`` frames once ``window_tokens`` columns are filled. Shared by the
    serial :class:`CodeGenerator` and the batching engine, so both sample the same columns."""

    def __init__(self, decoder, start_token: int, window_tokens: int, continuation_frames: int,
                 prompt_codes: torch.Tensor | None, device):
        self._decoder = decoder
        self.num_codebooks = decoder.num_codebooks
        self._start_token = start_token
        self.window_tokens = window_tokens
        self._continuation_frames = continuation_frames
        self.no_frames = torch.zeros((self.num_codebooks, 0), dtype=torch.long, device=device)
        self.windows = 0
        if prompt_codes is None:
            prompt_codes = self.no_frames
        for name, frames in (('prompt_codes', prompt_codes.shape[-1]),
                             ('continuation_frames', continuation_frames)):
            if frames + self.num_codebooks + 1 >= window_tokens:
                raise ValueError(f'{name}: {frames} frames of prompt leave no room to generate '
                                 f'in a window of {window_tokens} tokens')
        if continuation_frames < 1:
            raise ValueError(f'continuation_frames must be >= 1, got {continuation_frames}')
        self._open(prompt_codes.to(device))

    def _open(self, prompt_codes: torch.Tensor) -> None:
        start = torch.full((self.num_codebooks, 1), self._start_token, dtype=torch.long,
                           device=prompt_codes.device)
        prefix, pattern = self._decoder.build_delay_pattern_mask(
            torch.cat([start, prompt_codes], dim=-1), pad_token_id=self._start_token,
            max_length=self.window_tokens)
        self._pattern = pattern                       # -1 where a token is to be sampled
        self.columns = pattern.clone()
        self.columns[:, :prefix.shape[-1]] = prefix
        self.length = prefix.shape[-1]                # columns filled so far
        self._next_frame = prompt_codes.shape[-1]     # window-local index of the next new frame
        self.windows += 1

    @property
    def full(self) -> bool:
        return self.length == self.window_tokens

    def open_next(self) -> None:
        """Open the next window, prompted with the last frames of this one (call when full)."""
        frames_in_window = self.length - self.num_codebooks
        self._open(self.frames(frames_in_window - self._continuation_frames, frames_in_window))

    def release(self) -> None:
        self.columns = self._pattern = None

    def frames(self, first: int, end: int) -> torch.Tensor:
        """Codes ``(num_codebooks, end - first)`` of window-local frames [first, end): codebook
        k of frame f sits in column f + k + 1."""
        return torch.stack([self.columns[k, first + k + 1:end + k + 1]
                            for k in range(self.num_codebooks)])

    def record(self, tokens: torch.Tensor) -> torch.Tensor:
        """Store the sampled ``tokens`` (num_codebooks,) as the next column (positions the delay
        pattern fixes keep their pad); return the frame this completed, ``(num_codebooks, 1)``,
        or ``(num_codebooks, 0)`` while a window's first frame or a prompt frame completes."""
        fixed = self._pattern[:, self.length]
        self.columns[:, self.length] = torch.where(fixed == -1, tokens, fixed)
        self.length += 1
        frame = self.length - 1 - self.num_codebooks
        if frame < self._next_frame:
            return self.no_frames
        self._next_frame = frame + 1
        return self.frames(frame, frame + 1)


def sample(processors, ids_for_processors, logits: torch.Tensor,
           generator: torch.Generator) -> torch.Tensor:
    """Guidance, warpers, softmax and multinomial as ``generate`` does them: ``logits``
    (rows * num_codebooks, vocab) of one stream's last position -> tokens (num_codebooks,)."""
    scores = processors(ids_for_processors, logits.float())
    probs = torch.nn.functional.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


class CodeGenerator:
    """Samples MusicGen code frames for one text condition, one decoder step at a time, window
    after window, through transformers' decoder and its own KV cache (the serial path: one
    stream per forward pass).

    A window is one delay-pattern sequence of at most ``window_tokens`` columns with its own KV
    cache. The first window is prompted with ``prompt_codes`` (audio codes to continue, or
    None); each following window with the last ``continuation_frames`` frames produced. Not
    thread-safe: the caller serialises access to the shared model.
    """

    def __init__(self, model, condition: TextCondition, sampling: SamplingOptions,
                 generator: torch.Generator, window_tokens: int, continuation_frames: int,
                 prompt_codes: torch.Tensor | None = None):
        self._decoder = model.decoder
        self._condition = condition
        self._guided = sampling.guided
        self._processors = sampling.logits_processors()
        self._generator = generator
        device = condition.hidden.device
        self._codes = CodeWindows(model.decoder, model.generation_config.decoder_start_token_id,
                                  window_tokens, continuation_frames, prompt_codes, device)
        # The CFG processor checks the batch size of the (unused) ids it is handed.
        self._ids_for_processors = torch.zeros((model.decoder.num_codebooks, 1), dtype=torch.long,
                                               device=device)
        self._cache = None
        self.steps = 0

    @property
    def windows(self) -> int:
        return self._codes.windows

    def release(self) -> None:
        """Free the KV cache and token buffers; :meth:`step` may not be called afterwards."""
        self._cache = self._condition = None
        self._codes.release()

    def retarget(self, condition: TextCondition) -> None:
        """Condition the following steps on ``condition``, keeping the self-attention cache (the
        cross-attention keys are recomputed from the new text at the next step)."""
        self._condition = condition
        if self._cache is not None:
            self._cache = EncoderDecoderCache(self._cache.self_attention_cache,
                                              DynamicCache(config=self._decoder.config))

    def step(self) -> torch.Tensor:
        """Run one decoder step; return the frame it completed, ``(num_codebooks, 1)``, or
        ``(num_codebooks, 0)`` while a window's first frame or a prompt frame is completing."""
        codes = self._codes
        if codes.full:
            codes.open_next()
            self._cache = None
        if self._cache is None:
            config = self._decoder.config
            self._cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
            inputs = codes.columns[:, :codes.length]
        else:
            inputs = codes.columns[:, codes.length - 1:codes.length]
        if self._guided:
            inputs = inputs.repeat(2, 1)
        logits = self._decoder(input_ids=inputs, encoder_hidden_states=self._condition.hidden,
                               encoder_attention_mask=self._condition.mask, cache=self._cache,
                               use_cache=True).logits
        tokens = sample(self._processors, self._ids_for_processors, logits[:, -1],
                        self._generator)
        self.steps += 1
        return codes.record(tokens)
