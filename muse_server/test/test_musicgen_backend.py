"""The musicgen backend on a tiny random-weight MusicGen built from a config.

No weights or tokenizer files can be downloaded here, so the fixture builds (with
muse_server.backends.musicgen_random) a MusicGen with musicgen-small's layout (T5 text
encoder, EnCodec 32 kHz codec with upsampling [8, 5, 4, 4] and 2048-entry codebooks, a
4-codebook decoder) a few dozen channels wide, and a real T5Tokenizer over a vocabulary made
there, inside a real MusicgenProcessor. The backend runs exactly the generation path it runs on
musicgen-small.
"""

import threading
from unittest import mock

import numpy as np
import pytest
import torch
import transformers
from muse_server.backends import BackendError, PromptSpec, create_backend
from muse_server.backends.musicgen import MusicGenBackend, MusicGenInputError
from muse_server.backends.musicgen_decoder import DecoderPass
from muse_server.backends.musicgen_codec import (CodecBatcher, CodecLayout,
                                                 StreamingCodecDecoder, UnsupportedCodecError,
                                                 decode_together)
from muse_server.backends.musicgen_random import (START_TOKEN, build_processor,
                                                        build_t5_tokenizer, random_musicgen,
                                                        tiny_musicgen_config)

HOP = 640                  # samples per frame at 32 kHz (8 * 5 * 4 * 4)
CODEBOOKS = 4
START = START_TOKEN        # decoder start / pad token
TEXT = 'calm ambient techno with soft pads, 100 bpm'
OTHER_TEXT = 'upbeat pop for walking, 128 bpm'


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
    """The tiny model's ops are far too small to gain from a second thread, and on a busy
    2-core machine every two-thread parallel region waits for a core; run them on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def tiny():
    tokenizer = build_t5_tokenizer()
    model = random_musicgen(tiny_musicgen_config(len(tokenizer)))
    return model, build_processor(tokenizer)


def backend_for(tiny, **options):
    model, processor = tiny
    options.setdefault('seed', 1234)
    options.setdefault('top_k', 50)
    options.setdefault('device', 'cpu')
    return MusicGenBackend.from_model(model, processor, **options)


def pull(stream, count):
    return [stream.next_fragment() for _ in range(count)]


class CodecSpy:
    """Records the code frames every stream hands to its codec decoder."""

    def __init__(self):
        self.pushed = []
        original = StreamingCodecDecoder.push

        def push(decoder, codes):
            self.pushed.append(codes.clone())
            return original(decoder, codes)

        self._patch = mock.patch.object(StreamingCodecDecoder, 'push', autospec=True, side_effect=push)

    def __enter__(self):
        self._patch.__enter__()
        return self

    def __exit__(self, *exc_info):
        self._patch.__exit__(*exc_info)

    def codes(self):
        return torch.cat(self.pushed, dim=-1)


class DecoderInputSpy:
    """Records the input ids of every decoder forward pass, as transformers' decoder takes them
    ((rows * codebooks, columns)), through transformers' decoder (serial streams) or the
    batching engine's own pass over its weights."""

    def __init__(self, model):
        self.inputs = []
        self._handle = model.decoder.register_forward_pre_hook(self._record, with_kwargs=True)
        original = DecoderPass.embed

        def embed(decoder_pass, ids, positions):
            self.inputs.append(ids.reshape(-1, ids.shape[-1]).clone())
            return original(decoder_pass, ids, positions)

        self._patch = mock.patch.object(DecoderPass, 'embed', autospec=True, side_effect=embed)
        self._patch.__enter__()

    def _record(self, module, args, kwargs):
        self.inputs.append(kwargs['input_ids'].clone())

    def prefills(self):
        """Inputs of the passes that started a window (more than one column)."""
        return [ids for ids in self.inputs if ids.shape[-1] > 1]

    def close(self):
        self._handle.remove()
        self._patch.__exit__(None, None, None)


def one_shot_generate(model, processor, text, seed, max_new_tokens, top_k, prompt_codes=None):
    """transformers' own generate + decode, returning (audio, codes (cb, frames))."""
    captured = {}
    decode = model.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        captured['codes'] = codes[0, 0].clone()
        return decode(codes, *args, **kwargs)

    inputs = processor(text=[text], padding=True, return_tensors='pt')
    extra = {} if prompt_codes is None else {'decoder_input_ids': prompt_codes}
    torch.manual_seed(seed)
    with mock.patch.object(model.audio_encoder, 'decode', side_effect=spy):
        audio = model.generate(**inputs, do_sample=True, guidance_scale=3.0, top_k=top_k,
                               max_new_tokens=max_new_tokens, **extra)
    return audio[0, 0].numpy(), captured['codes']


def delay_pattern_prefix(codes):
    """The decoder's window-opening input for a prompt of `codes` (cb, C), written out from the
    delay pattern's definition: column 0 is the start token, codebook k of frame f sits in
    column f + k + 1, and positions before a codebook's first frame hold the pad token."""
    cb, frames = codes.shape
    expected = torch.full((cb, frames + 1), START, dtype=torch.long)
    for k in range(cb):
        for column in range(1, frames + 1):
            frame = column - 1 - k
            if frame >= 0:
                expected[k, column] = codes[k, frame]
    return expected


@pytest.mark.parametrize('chunks', [[60], [1] * 60, [7, 1, 13, 2, 30, 7]])
def test_codec_decoder_streams_exactly_what_a_one_shot_decode_gives(tiny, chunks):
    codec = tiny[0].audio_encoder
    codes = torch.randint(0, 2048, (CODEBOOKS, sum(chunks)), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        one_shot = codec.decode(codes[None, None], [None]).audio_values[0, 0]
        decoder = StreamingCodecDecoder(codec)
        pieces, pushed = [], 0
        for size in chunks:
            pieces.append(decoder.push(codes[:, pushed:pushed + size]))
            pushed += size
            # Everything but the look-ahead is out after each push, in order.
            assert decoder.samples_emitted == max(0, pushed - decoder.lookahead_frames) * HOP
    assert decoder.lookahead_frames == 4
    streamed = torch.cat(pieces)
    assert len(streamed) == (sum(chunks) - 4) * HOP
    torch.testing.assert_close(streamed, one_shot[:len(streamed)], atol=1e-5, rtol=0)


def test_codec_decoder_primed_with_context_emits_only_what_follows_it(tiny):
    codec = tiny[0].audio_encoder
    codes = torch.randint(0, 2048, (CODEBOOKS, 30), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        one_shot = codec.decode(codes[None, None], [None]).audio_values[0, 0]
        decoder = StreamingCodecDecoder(codec)
        decoder.prime(codes[:, :12])
        after = torch.cat([decoder.push(codes[:, 12:20]), decoder.push(codes[:, 20:])])
    assert len(after) == (30 - 12 - 4) * HOP
    torch.testing.assert_close(after, one_shot[12 * HOP:12 * HOP + len(after)], atol=1e-5, rtol=0)


def test_codec_decoders_sharing_one_layout_decode_bit_identically(tiny):
    codec = tiny[0].audio_encoder
    codes = torch.randint(0, 2048, (CODEBOOKS, 25), generator=torch.Generator().manual_seed(5))
    layout = CodecLayout(codec)
    with torch.inference_mode():
        own = StreamingCodecDecoder(codec)
        shared = [StreamingCodecDecoder(codec, layout) for _ in range(2)]
        for decoder in (own, *shared):
            decoder.prime(codes[:, :5])
        for begin, end in ((5, 9), (9, 10), (10, 25)):
            expected = own.push(codes[:, begin:end])
            for decoder in shared:
                assert torch.equal(decoder.push(codes[:, begin:end]), expected)
    assert shared[0].lookahead_frames == own.lookahead_frames == layout.lookahead_frames == 4


def test_codec_decoders_of_several_streams_decode_together_what_they_decode_alone(tiny):
    """decode_together batches the streams standing at the same point (three in step, one
    primed apart, one pushed a different chunk) and equals separate pushes up to rounding."""
    codec = tiny[0].audio_encoder
    layout = CodecLayout(codec)
    generator = torch.Generator().manual_seed(6)
    codes = [torch.randint(0, 2048, (CODEBOOKS, 40), generator=generator) for _ in range(5)]
    chunks = [[6, 1, 9, 12, 12]] * 4 + [[5, 2, 9, 12, 12]]
    with torch.inference_mode():
        alone = [StreamingCodecDecoder(codec, layout) for _ in codes]
        together = [StreamingCodecDecoder(codec, layout) for _ in codes]
        for decoder in (alone[3], together[3]):
            decoder.prime(codes[3][:, :3])
        pushed = [0] * len(codes)
        for step in range(5):
            pieces = [codes[i][:, pushed[i]:pushed[i] + chunks[i][step]] for i in range(5)]
            expected = [decoder.push(piece) for decoder, piece in zip(alone, pieces)]
            got = decode_together(together, pieces)
            for mine, theirs in zip(got, expected):
                torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
            pushed = [p + chunks[i][step] for i, p in enumerate(pushed)]
    assert [d.samples_emitted for d in together] == [d.samples_emitted for d in alone]


def test_codec_batcher_decodes_concurrent_readers_in_shared_passes(tiny):
    codec = tiny[0].audio_encoder
    layout = CodecLayout(codec)
    codes = torch.randint(0, 2048, (CODEBOOKS, 24), generator=torch.Generator().manual_seed(7))
    batcher = CodecBatcher()
    readers = 6
    decoders = [StreamingCodecDecoder(codec, layout) for _ in range(readers)]
    outputs = [[] for _ in range(readers)]
    start = threading.Barrier(readers)

    def read(index):
        with torch.inference_mode():
            for begin in range(0, 24, 8):
                start.wait()
                outputs[index].append(batcher.push(decoders[index], codes[:, begin:begin + 8]))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with torch.inference_mode():
        reference = StreamingCodecDecoder(codec, layout)
        expected = torch.cat([reference.push(codes[:, b:b + 8]) for b in range(0, 24, 8)])
    for output in outputs:
        torch.testing.assert_close(torch.cat(output), expected, atol=1e-5, rtol=0)
    assert batcher.decodes == 3 * readers and batcher.passes <= batcher.decodes


@pytest.mark.parametrize('change, named', [
    ({'norm_type': 'time_group_norm'}, 'norm_type'),
    ({'chunk_length_s': 1.0, 'overlap': 0.01}, 'chunk'),
    ({'audio_channels': 2}, 'mono'),
])
def test_codec_decoder_rejects_codecs_it_cannot_stream(change, named):
    config = transformers.EncodecConfig(hidden_size=16, num_filters=4, upsampling_ratios=[8, 5, 4, 4],
                                        target_bandwidths=[2.2], sampling_rate=32000,
                                        codebook_size=2048, use_causal_conv=False, **change)
    with pytest.raises(UnsupportedCodecError, match=named):
        StreamingCodecDecoder(transformers.EncodecModel(config))


def test_fragments_arrive_every_play_steps_with_the_right_sample_count(tiny):
    backend = backend_for(tiny, play_steps=12)
    assert (backend.sample_rate, backend.channels, backend.lookahead_frames) == (32000, 1, 4)
    with backend.open_stream(PromptSpec(prompt_id=1, text=TEXT)) as stream:
        fragments = []
        for index in range(5):
            fragments.append(stream.next_fragment())
            assert stream.decoder_steps == 12 * (index + 1)
        for fragment in fragments:
            assert fragment.dtype == np.float32 and fragment.ndim == 2 and fragment.shape[1] == 1
            assert np.isfinite(fragment).all() and np.abs(fragment).max() <= 1.0
            assert np.abs(fragment).max() > 0.0
        # The first fragment lacks the frames still inside the delay pattern and the codec's
        # look-ahead; every later one carries exactly play_steps frames.
        assert len(fragments[0]) == (12 - (CODEBOOKS - 1) - backend.lookahead_frames) * HOP
        assert [len(f) for f in fragments[1:]] == [12 * HOP] * 4
        assert stream.windows == 1


@pytest.mark.parametrize('batching', [True, False], ids=['batched', 'serial'])
def test_stream_equals_one_shot_generate_and_decode_for_the_same_seed(tiny, batching):
    model, processor = tiny
    max_new_tokens = 40
    window_frames = max_new_tokens + 1 - CODEBOOKS   # what generate returns for that length
    backend = backend_for(tiny, batching=batching, play_steps=10,
                          window_tokens=max_new_tokens + 1, context_s=0.5, continuation_s=0.5)
    with CodecSpy() as codec_spy, backend.open_stream(PromptSpec(prompt_id=1, text=TEXT)) as stream:
        streamed = np.concatenate(pull(stream, 4))[:, 0]
    reference_audio, reference_codes = one_shot_generate(model, processor, TEXT, seed=1234,
                                                         max_new_tokens=max_new_tokens, top_k=50)
    assert reference_codes.shape == (CODEBOOKS, window_frames)
    assert torch.equal(codec_spy.codes()[:, :window_frames], reference_codes)
    # The stream holds back the codec's look-ahead; everything before it is final and equal.
    compared = (window_frames - backend.lookahead_frames) * HOP
    assert len(streamed) >= compared
    np.testing.assert_allclose(streamed[:compared], reference_audio[:compared], atol=1e-5, rtol=0)


@pytest.mark.parametrize('batching', [True, False], ids=['batched', 'serial'])
def test_continuation_across_windows_has_no_gap_and_is_prompted_with_the_last_frames(tiny, batching):
    model, _ = tiny
    window_tokens, continuation_frames = 24, 6
    backend = backend_for(tiny, batching=batching, play_steps=10, window_tokens=window_tokens,
                          continuation_s=continuation_frames / 50, context_s=0.1)
    inputs = DecoderInputSpy(model)
    try:
        with CodecSpy() as codec_spy, backend.open_stream(PromptSpec(1, TEXT)) as stream:
            fragments = pull(stream, 8)
            windows = stream.windows
    finally:
        inputs.close()
    assert windows >= 3
    codes = codec_spy.codes()
    audio = np.concatenate(fragments)[:, 0]
    # Sample-continuous: the fragments are exactly the one-shot decode of every frame produced,
    # in order, with nothing missing or repeated at the window changes.
    assert len(audio) == (codes.shape[-1] - backend.lookahead_frames) * HOP
    with torch.inference_mode():
        one_shot = model.audio_encoder.decode(codes[None, None], [None]).audio_values[0, 0].numpy()
    np.testing.assert_allclose(audio, one_shot[:len(audio)], atol=1e-5, rtol=0)
    # Each window after the first opened with the last frames of the previous ones.
    prefills = inputs.prefills()
    assert len(prefills) == windows - 1
    frames_in_window = window_tokens - CODEBOOKS
    produced = frames_in_window              # frames made before the second window
    for prefill in prefills:
        expected = delay_pattern_prefix(codes[:, produced - continuation_frames:produced])
        assert torch.equal(prefill[:CODEBOOKS], expected)
        assert torch.equal(prefill[CODEBOOKS:], expected)         # the guidance copy
        produced += frames_in_window - continuation_frames


@pytest.mark.parametrize('batching', [True, False], ids=['batched', 'serial'])
def test_prompt_change_feeds_the_context_codes_and_continues_the_waveform(tiny, batching):
    model, processor = tiny
    backend = backend_for(tiny, batching=batching, play_steps=10, context_s=0.3)      # 15 frames
    with backend.open_stream(PromptSpec(1, TEXT)) as first:
        sent = np.concatenate(pull(first, 3))
    context_frames = 15
    with torch.inference_mode():
        tail = torch.from_numpy(sent[-context_frames * HOP:, 0].copy())
        context_codes = model.audio_encoder.encode(tail.reshape(1, 1, -1)).audio_codes[0, 0]
    assert context_codes.shape == (CODEBOOKS, context_frames)

    inputs = DecoderInputSpy(model)
    try:
        with CodecSpy() as codec_spy, backend.open_stream(PromptSpec(2, OTHER_TEXT), context=sent) as second:
            new_audio = np.concatenate(pull(second, 2))[:, 0]
    finally:
        inputs.close()
    prefill = inputs.inputs[0]
    expected = delay_pattern_prefix(context_codes)
    assert torch.equal(prefill[:CODEBOOKS], expected)
    assert torch.equal(prefill[CODEBOOKS:], expected)

    # The new codes are those of transformers' audio-prompted generate for the same seed ...
    new_codes = codec_spy.codes()
    generated_frames = 30
    _, reference_codes = one_shot_generate(
        model, processor, OTHER_TEXT, seed=1234 + 1, max_new_tokens=generated_frames, top_k=50,
        prompt_codes=context_codes)
    assert torch.equal(reference_codes[:, :context_frames], context_codes)
    # generate's last num_codebooks - 1 frames are sampled next to its end-of-window padding,
    # which a stream does not have: compare the frames before them.
    comparable = generated_frames - 2 * (CODEBOOKS - 1)
    assert 0 < new_codes.shape[-1] <= comparable
    assert torch.equal(new_codes,
                       reference_codes[:, context_frames:context_frames + new_codes.shape[-1]])
    # ... and the audio continues the decoded context: the codec was primed with it.
    with torch.inference_mode():
        joined = torch.cat([context_codes, new_codes], dim=-1)
        one_shot = model.audio_encoder.decode(joined[None, None], [None]).audio_values[0, 0].numpy()
    start = context_frames * HOP
    np.testing.assert_allclose(new_audio, one_shot[start:start + len(new_audio)], atol=1e-5, rtol=0)


def test_context_shorter_than_a_frame_or_disabled_starts_unprompted(tiny):
    model, _ = tiny
    for backend, context in ((backend_for(tiny, play_steps=8), np.zeros((HOP - 1, 1), np.float32)),
                             (backend_for(tiny, play_steps=8, context_s=0),
                              np.zeros((10 * HOP, 1), np.float32))):
        inputs = DecoderInputSpy(model)
        try:
            with backend.open_stream(PromptSpec(1, TEXT), context=context) as stream:
                stream.next_fragment()
        finally:
            inputs.close()
        assert inputs.inputs[0].shape == (2 * CODEBOOKS, 1)


def test_serial_streams_taking_turns_match_the_same_streams_run_one_after_the_other(tiny):
    def run(backend, threaded):
        streams = [backend.open_stream(PromptSpec(i, text)) for i, text in enumerate((TEXT, OTHER_TEXT))]
        results = [None, None]

        def work(index):
            results[index] = np.concatenate(pull(streams[index], 3))

        if threaded:
            threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        else:
            work(0)
            work(1)
        for stream in streams:
            stream.close()
        return results

    sequential = run(backend_for(tiny, play_steps=8, batching=False), threaded=False)
    concurrent = run(backend_for(tiny, play_steps=8, batching=False), threaded=True)
    for alone, together in zip(sequential, concurrent):
        assert together is not None
        np.testing.assert_array_equal(alone, together)


def test_repeated_prompt_text_is_encoded_once(tiny):
    backend = backend_for(tiny, play_steps=8)
    from muse_server.backends import musicgen
    with mock.patch.object(musicgen, 'encode_text', wraps=musicgen.encode_text) as encode:
        for prompt_id in range(3):
            backend.open_stream(PromptSpec(prompt_id, TEXT)).close()
        backend.open_stream(PromptSpec(3, OTHER_TEXT)).close()
    assert encode.call_count == 2


def test_loads_a_saved_model_and_processor_from_a_local_directory(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = MusicGenBackend(model=str(tmp_path), device='cpu', dtype='float32', play_steps=8,
                             seed=5, top_k=50)
    assert loaded.model is not model
    built = backend_for(tiny, play_steps=8, seed=5)
    with loaded.open_stream(PromptSpec(1, TEXT)) as a, built.open_stream(PromptSpec(1, TEXT)) as b:
        np.testing.assert_array_equal(np.concatenate(pull(a, 2)), np.concatenate(pull(b, 2)))
    # The server's way in: the registry name, a path and its fragment_s option.
    served = create_backend('musicgen', model=str(tmp_path), device='cpu', fragment_s=0.2)
    assert isinstance(served, MusicGenBackend) and served.play_steps == 10
    with served.open_stream(PromptSpec(1, TEXT)) as stream:
        assert stream.next_fragment().shape == ((10 - 3 - 4) * HOP, 1)


def test_a_missing_model_path_is_a_clear_backend_error(tmp_path):
    missing = tmp_path / 'no-such-model'
    with pytest.raises(BackendError, match='no-such-model'):
        MusicGenBackend(model=str(missing), device='cpu')


@pytest.mark.parametrize('options, named', [
    ({'play_steps': 0}, 'play_steps'),
    ({'play_steps': 2.5}, 'play_steps'),
    ({'play_steps': 10, 'fragment_s': 0.5}, 'fragment_s'),
    ({'play_steps': 10, 'max_fragment_s': 0.1}, 'max_fragment_s'),
    ({'max_fragment_s': -1.0}, 'max_fragment_s'),
    ({'fragment_s': -1.0}, 'fragment_s'),
    ({'guidance_scale': 0.5}, 'guidance_scale'),
    ({'top_k': -1}, 'top_k'),
    ({'temperature': 0.0}, 'temperature'),
    ({'context_s': -0.5}, 'context_s'),
    ({'context_s': float('nan')}, 'context_s'),
    ({'continuation_s': 0.0}, 'continuation_s'),
    ({'window_tokens': 24, 'context_s': 0.1, 'continuation_s': 1.0}, 'continuation_s'),
    ({'window_tokens': 24, 'context_s': 1.0, 'continuation_s': 0.1}, 'context_s'),
    ({'window_tokens': 5}, 'window_tokens'),
    ({'window_tokens': 4096}, 'window_tokens'),
    ({'window_tokens': 30.0}, 'window_tokens'),
    ({'device': 'tpu'}, 'device'),
    ({'dtype': 'int8'}, 'dtype'),
    ({'seed': -3}, 'seed'),
    ({'text_cache_size': -1}, 'text_cache_size'),
])
def test_bad_options_are_rejected_with_an_error_naming_them(tiny, options, named):
    with pytest.raises(MusicGenInputError, match=named) as caught:
        backend_for(tiny, **options)
    assert isinstance(caught.value, BackendError) and isinstance(caught.value, ValueError)


def test_bad_models_and_unknown_options_are_rejected(tiny):
    model, processor = tiny
    with pytest.raises(MusicGenInputError, match='model'):
        MusicGenBackend(model=123, device='cpu')
    with pytest.raises(MusicGenInputError, match='processor'):
        MusicGenBackend(model=model, device='cpu')
    with pytest.raises(MusicGenInputError, match='processor'):
        MusicGenBackend(model='some/id', processor=processor, device='cpu')
    with pytest.raises(TypeError):
        MusicGenBackend.from_model(model, processor, device='cpu', play_step=3)
    with pytest.raises(BackendError, match='play_step'):
        create_backend('musicgen', model=model, processor=processor, play_step=3)


@pytest.mark.parametrize('context, named', [
    (np.zeros((3200, 2), np.float32), 'shape'),
    (np.zeros(3200, np.float32), 'shape'),
    (np.zeros((3200, 1), np.int16), 'float'),
    ([0.0] * 3200, 'numpy'),
    (np.full((3200, 1), np.nan, np.float32), 'NaN'),
])
def test_bad_context_is_rejected_with_a_clear_error(tiny, context, named):
    backend = backend_for(tiny)
    with pytest.raises(MusicGenInputError, match=named):
        backend.open_stream(PromptSpec(1, TEXT), context=context)


def test_a_failing_step_ends_that_stream_with_a_backend_error_and_not_the_backend(tiny):
    from muse_server.backends.musicgen_generation import CodeGenerator
    backend = backend_for(tiny, play_steps=8, batching=False)
    broken = backend.open_stream(PromptSpec(1, TEXT))
    with mock.patch.object(CodeGenerator, 'step', side_effect=RuntimeError('CUDA out of memory')):
        with pytest.raises(BackendError, match='out of memory'):
            broken.next_fragment()
    with pytest.raises(BackendError, match='failed earlier'):
        broken.next_fragment()
    broken.close()
    with backend.open_stream(PromptSpec(2, TEXT)) as healthy:
        assert len(healthy.next_fragment()) > 0


def test_closed_streams_and_backends_refuse_work(tiny):
    backend = backend_for(tiny, play_steps=8)
    stream = backend.open_stream(PromptSpec(1, TEXT))
    stream.next_fragment()
    stream.close()
    stream.close()
    assert stream.decoder_steps == 8
    with pytest.raises(BackendError, match='closed'):
        stream.next_fragment()
    with pytest.raises(MusicGenInputError, match='PromptSpec'):
        backend.open_stream('calm music')
    backend.close()
    with pytest.raises(BackendError, match='closed'):
        backend.open_stream(PromptSpec(1, TEXT))


# ----- the batching engine -----

def alone(tiny, seed, text, fragments, context=None, **options):
    """The audio of one stream decoded with nothing else on its backend (equal audio from the
    same codec means equal code frames)."""
    backend = backend_for(tiny, seed=seed, **options)
    with backend.open_stream(PromptSpec(1, text), context=context) as stream:
        return np.concatenate(pull(stream, fragments))


def test_streams_joining_and_leaving_a_batch_mid_window_decode_what_they_decode_alone(tiny):
    options = dict(play_steps=6, window_tokens=24, continuation_s=6 / 50, context_s=0.2)
    backend = backend_for(tiny, seed=100, **options)
    backend.engine.prefetch_steps = 40      # the engine runs every stream ahead: they batch
    context = alone(tiny, 7, TEXT, 2, **options)[-10 * HOP:]
    first = backend.open_stream(PromptSpec(1, TEXT))                        # seed 100
    second = backend.open_stream(PromptSpec(2, OTHER_TEXT), context=context)  # seed 101
    got = {1: pull(first, 2), 2: pull(second, 1)}
    third = backend.open_stream(PromptSpec(3, 'slow piano'))                 # seed 102, joins late
    got[3] = pull(third, 3)
    got[2] += pull(second, 1)
    second.close()                                                           # leaves mid-window
    got[1] += pull(first, 3)
    got[3] += pull(third, 2)
    first.close()
    third.close()
    sizes = [size for size, _ in backend.engine.stats.recent]
    assert max(sizes) == 3 and min(sizes) == 1
    assert backend.engine.stats.prefill_chunks > 6          # window changes rejoined the batch
    expected = {1: alone(tiny, 100, TEXT, 5, **options),
                2: alone(tiny, 101, OTHER_TEXT, 2, context=context, **options),
                3: alone(tiny, 102, 'slow piano', 5, **options)}
    for key, fragments in got.items():
        np.testing.assert_array_equal(np.concatenate(fragments), expected[key])


def test_batched_logits_equal_the_logits_of_each_stream_alone(tiny):
    """The forward pass of a ragged batch (positions 3 and 9, texts of different lengths)
    against transformers' decoder run for each stream alone."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from muse_server.backends.musicgen_decoder import BatchCache, CrossKV, PrivateCache
    from muse_server.backends.musicgen_generation import encode_text
    model, processor = tiny
    decoder_pass = DecoderPass(model.decoder)
    columns = torch.randint(0, 2048, (2, CODEBOOKS, 10), generator=torch.Generator().manual_seed(1))
    lengths = (4, 10)
    with torch.inference_mode():
        conditions = [encode_text(model, processor.tokenizer, text, True) for text in (TEXT, 'jazz')]
        reference = []
        for condition, ids, length in zip(conditions, columns, lengths):
            config = model.decoder.config
            cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
            logits = model.decoder(input_ids=ids[:, :length].repeat(2, 1),
                                   encoder_hidden_states=condition.hidden,
                                   encoder_attention_mask=condition.mask, cache=cache).logits
            reference.append(logits[:, -1].reshape(2, CODEBOOKS, -1))
        batch = BatchCache(decoder_pass.num_layers, decoder_pass.heads, decoder_pass.head_dim,
                           decoder_pass.scaling, torch.float32, 'cpu', 2048)
        crosses = [decoder_pass.cross_kv(c.hidden, c.mask) for c in conditions]
        for slot, (ids, length, cross) in enumerate(zip(columns, lengths, crosses)):
            private = PrivateCache(decoder_pass.num_layers, decoder_pass.scaling)
            hidden = decoder_pass.embed(ids[None, :, :length - 1].expand(2, -1, -1),
                                        torch.arange(length - 1)[None].expand(2, -1))
            decoder_pass.forward(hidden, private, cross)
            batch.put(2 * slot, private)
        padded = CrossKV.stacked(crosses)
        positions = torch.tensor([lengths[0] - 1] * 2 + [lengths[1] - 1] * 2)
        batch.select(slice(0, 4), positions)
        ids = torch.stack([columns[0, :, lengths[0] - 1]] * 2 + [columns[1, :, lengths[1] - 1]] * 2)
        logits = decoder_pass.forward(decoder_pass.embed(ids[:, :, None], positions[:, None]),
                                      batch, padded)[:, :, -1]
    assert crosses[0].length != crosses[1].length
    # float32 rounding of differently shaped matrix products and of masked padding
    torch.testing.assert_close(logits[:2], reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[2:], reference[1], atol=1e-5, rtol=1e-5)


def test_a_stream_failing_inside_a_batch_ends_alone(tiny):
    options = dict(play_steps=6)
    backend = backend_for(tiny, seed=200, **options)
    backend.engine.prefetch_steps = 30
    healthy = backend.open_stream(PromptSpec(1, TEXT))
    broken = backend.open_stream(PromptSpec(2, 'broken'))
    # NaN in its text keys poisons its own rows only: its sampling fails, not the batch's.
    poisoned = broken._source._handle.condition
    with torch.inference_mode():
        for keys in poisoned.keys:
            keys[0].fill_(float('nan'))
    fragments = pull(healthy, 1)
    with pytest.raises(BackendError, match='probability'):
        broken.next_fragment()
    broken.close()
    # A batch pass that raises is retried stream by stream: streams that step alone go on.
    calls = {'batched': 0}
    original = DecoderPass.forward

    def flaky(decoder_pass, hidden, *args, **kwargs):
        if hidden.shape[0] > 2:
            calls['batched'] += 1
            raise RuntimeError('CUDA out of memory')
        return original(decoder_pass, hidden, *args, **kwargs)

    other = backend.open_stream(PromptSpec(3, OTHER_TEXT))
    with mock.patch.object(DecoderPass, 'forward', autospec=True, side_effect=flaky):
        fragments += pull(healthy, 3)
        pull(other, 2)
    assert calls['batched'] > 0
    healthy.close()
    other.close()
    np.testing.assert_array_equal(np.concatenate(fragments), alone(tiny, 200, TEXT, 4, **options))


def test_retarget_at_weight_zero_is_the_unchanged_stream(tiny):
    from muse_server.backends import musicgen_engine
    backend = backend_for(tiny, seed=300, play_steps=6, morph_s=0.5)
    with backend.open_stream(PromptSpec(1, TEXT)) as stream:
        fragments = pull(stream, 2)
        with mock.patch.object(musicgen_engine, 'morph_weight', return_value=0.0):
            assert stream.retarget(PromptSpec(2, OTHER_TEXT)) is True
            fragments += pull(stream, 3)
        assert backend.engine.stats.morph_steps > 0
    np.testing.assert_array_equal(np.concatenate(fragments),
                                  alone(tiny, 300, TEXT, 5, play_steps=6))


def run_retargeted(tiny, before, after, **options):
    backend = backend_for(tiny, seed=400, play_steps=6, **options)
    with backend.open_stream(PromptSpec(1, TEXT)) as stream:
        fragments = pull(stream, before)
        assert stream.retarget(PromptSpec(2, OTHER_TEXT)) is True
        fragments += pull(stream, after)
    return np.concatenate(fragments)


def test_retarget_at_weight_one_is_the_new_text_on_the_kept_cache(tiny):
    from muse_server.backends import musicgen_engine
    # Reference: transformers' decoder on the serial path, its self-attention cache kept and
    # its cross-attention recomputed from the new text.
    switched = run_retargeted(tiny, 2, 3, batching=False)
    np.testing.assert_array_equal(run_retargeted(tiny, 2, 3, morph_s=0), switched)
    with mock.patch.object(musicgen_engine, 'morph_weight', return_value=1.0):
        np.testing.assert_array_equal(run_retargeted(tiny, 2, 3, morph_s=0.5), switched)
    # A real ramp: the new text's weight rises by 1/morph_steps per step up to 1, then the
    # new text is the stream's own (no more mixing).
    weights = []
    original = DecoderPass.forward

    def spy(decoder_pass, hidden, self_attend, cross, morph=None):
        weights.append(None if morph is None else morph[1][0].item())
        return original(decoder_pass, hidden, self_attend, cross, morph)

    with mock.patch.object(DecoderPass, 'forward', autospec=True, side_effect=spy):
        run_retargeted(tiny, 1, 3, morph_s=0.1)                  # 5 steps
    ramp = [w for w in weights if w is not None]
    assert ramp == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    first = weights.index(ramp[0])
    assert weights[first:first + 5] == ramp and weights[first + 5:] == [None] * len(weights[first + 5:])


def test_a_stream_morphing_inside_a_batch_leaves_the_others_untouched(tiny):
    options = dict(play_steps=6)
    backend = backend_for(tiny, seed=500, morph_s=0.3, **options)
    backend.engine.prefetch_steps = 30
    morphing = backend.open_stream(PromptSpec(1, TEXT))
    steady = backend.open_stream(PromptSpec(2, 'slow piano'))
    got = pull(steady, 1)
    pull(morphing, 1)
    assert morphing.retarget(PromptSpec(3, 'fast drums and bass for stairs'))
    got += pull(steady, 2)
    pull(morphing, 3)
    got += pull(steady, 2)
    assert backend.engine.stats.morph_steps >= 15
    assert max(size for size, _ in backend.engine.stats.recent) == 2
    morphing.close()
    steady.close()
    np.testing.assert_array_equal(np.concatenate(got), alone(tiny, 501, 'slow piano', 5, **options))


class FakeClock:
    """Stands in for the backend's clock: every reading advances by ``tick`` seconds, so a
    fragment (two readings) appears to take ``tick``."""

    def __init__(self, tick):
        self.tick, self.now = tick, 0.0

    def __call__(self):
        self.now += self.tick
        return self.now


@pytest.mark.parametrize('batching', [True, False], ids=['batched', 'serial'])
def test_fragments_grow_for_every_stream_under_load_and_shrink_back_after_it(tiny, batching):
    backend = backend_for(tiny, batching=batching, play_steps=5, max_fragment_s=0.4)
    streams = [backend.open_stream(PromptSpec(i, TEXT)) for i in range(2)]
    for stream in streams:
        stream.next_fragment()      # first fragments (openings) are not counted
    assert backend.load().play_steps == 5 and backend.load().play_steps_max == 20
    # Slow: a fragment of 5 steps (0.1 s of audio) takes 0.2 s, half real time.
    backend.clock = FakeClock(0.2)
    sizes = []
    while backend.play_steps < 20:
        for stream in streams:
            fragment = stream.next_fragment()
            sizes.append(len(fragment) // HOP)
        assert len(sizes) < 80, f'fragments never grew to 20 steps: {sizes}'
    assert {5, 10} <= set(sizes)     # 5 -> 10 -> 20: doubled, for both streams
    assert [len(stream.next_fragment()) // HOP for stream in streams] == [20, 20]
    health = backend.load()
    assert health.play_steps == 20 and health.play_steps_base == 5 and health.fragment_rtf == 2.0
    # Fast again: every fragment takes 1 ms.
    backend.clock = FakeClock(0.001)
    while backend.play_steps > 5:
        for stream in streams:
            stream.next_fragment()
        assert backend.play_steps_governor.changes < 6
    assert backend.load().play_steps_max == 20
    assert [len(stream.next_fragment()) // HOP for stream in streams] == [5, 5]
    assert backend.play_steps_governor.changes == 4     # up twice, down twice, no flapping
    for stream in streams:
        stream.close()
    backend.close()


def test_fragment_size_stays_put_between_the_thresholds(tiny):
    backend = backend_for(tiny, play_steps=5, max_fragment_s=0.4)
    with backend.open_stream(PromptSpec(1, TEXT)) as stream:
        stream.next_fragment()
        backend.clock = FakeClock(0.1 / 1.5)      # 1.5x real time: inside [1.2, 2.4]
        pull(stream, 8)
        assert backend.play_steps == 5 and backend.play_steps_governor.changes == 0
    backend.close()
