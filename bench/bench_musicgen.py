"""Benchmark of the musicgen backend's streamer against transformers' generate + the reference
MusicGen streamer, on the real musicgen-small architecture with random weights.

    ./muse.sh exec python bench/bench_musicgen.py [--quick] [--seconds S] [--play-steps N]
        [--device auto|cpu|cuda] [--repeats R] [--plot out/bench_musicgen.png]

Both methods produce ``--seconds`` of audio for the same prompt, fragment every
``--play-steps`` decoder steps, from the same model object, with the same sampling (guidance 3,
top-k 250) and the same seed, so they sample the same tokens (checked: the audio of each pair
is compared). Runs alternate between the methods to share out machine noise.

- baseline: ``model.generate(..., streamer=ReferenceStreamer)``, the pattern of the HF
  "MusicGen Streaming" space (transformers' ``BaseStreamer``): keep every token column and,
  every ``play_steps`` columns, re-decode the whole cache (delay-pattern mask -> EnCodec) and
  yield the new samples minus a stride; generate runs in a thread, the caller reads a queue.
- muse: ``MusicGenBackend.open_stream(...).next_fragment()`` (step-wise generation, text
  encoded once, incremental EnCodec decoding).

Both run in a worker thread (as the server runs streams) while the main thread times the
arrivals. Reported per method: time to first fragment (TTFF, from the request to the first
audio, text encoding included), real-time factor (seconds of audio per second of wall time),
the interval between fragments, milliseconds per decoder step, and the largest deviation of
the fragments from a one-shot decode of the same tokens; then the ratios.

A second part times only the codes -> audio step at every fragment of a longer stream (10 s
quick, 29 s full): the reference re-decodes everything so far, the muse decoder only the new
frames. The plot (``--plot``) shows audio delivered over time and this per-fragment cost.

Weights are random (speed does not depend on their values); on a CPU-only machine the numbers
are CPU numbers, and the output says so.
"""

import argparse
import contextlib
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers.generation.streamers import BaseStreamer

from muse_common.stats import percentile
from muse_server.backends import PromptSpec
from muse_server.backends.musicgen import MusicGenBackend
from muse_server.backends.musicgen_codec import StreamingCodecDecoder
from muse_server.backends.musicgen_random import (build_processor, build_t5_tokenizer,
                                                        musicgen_small_config, random_musicgen)

PROMPT = 'chill techno with soft pads and steady drums for walking, 118 bpm'
TOP_K = 250
GUIDANCE = 3.0


class ReferenceStreamer(BaseStreamer):
    """The reference streamer: re-decodes the whole token cache every ``play_steps`` tokens."""

    def __init__(self, model, play_steps):
        self.decoder = model.decoder
        self.audio_encoder = model.audio_encoder
        self.generation_config = model.generation_config
        self.play_steps = play_steps
        hop_length = int(np.prod(self.audio_encoder.config.upsampling_ratios))
        self.stride = hop_length * (play_steps - self.decoder.num_codebooks) // 6
        self.token_cache = None
        self.to_yield = 0
        self.audio_queue = None            # set by the caller

    def _decode_cache(self):
        _, pattern = self.decoder.build_delay_pattern_mask(
            self.token_cache[:, :1], pad_token_id=self.generation_config.decoder_start_token_id,
            max_length=self.token_cache.shape[-1])
        ids = self.decoder.apply_delay_pattern_mask(self.token_cache, pattern)
        ids = ids[ids != self.generation_config.pad_token_id].reshape(1, self.decoder.num_codebooks, -1)
        audio = self.audio_encoder.decode(ids[None].to(self.audio_encoder.device), audio_scales=[None])
        return audio.audio_values[0, 0].float().cpu().numpy()

    def put(self, value):
        self.token_cache = value if self.token_cache is None else torch.cat(
            [self.token_cache, value[:, None]], dim=-1)
        if self.token_cache.shape[-1] % self.play_steps == 0:
            audio = self._decode_cache()
            self.audio_queue.put(audio[self.to_yield:-self.stride])
            self.to_yield += len(audio) - self.to_yield - self.stride

    def end(self):
        if self.token_cache is not None:
            self.audio_queue.put(self._decode_cache()[self.to_yield:])


@contextlib.contextmanager
def streamer_reattached(model, streamer):
    """transformers 5.24's ``MusicgenForConditionalGeneration.generate`` hands ``_sample`` no
    streamer (it calls ``_extract_generation_mode_kwargs(..., streamer=None)``), so a streamer
    sees only the prompt column and never ``end()``. Hand it over as 4.x did, for one call."""
    extract = model._extract_generation_mode_kwargs

    def extract_with_streamer(custom_generate, kwargs, synced_gpus, assistant_model, _streamer):
        return extract(custom_generate, kwargs, synced_gpus, assistant_model, streamer)

    model._extract_generation_mode_kwargs = extract_with_streamer
    try:
        yield
    finally:
        del model._extract_generation_mode_kwargs


def consume(fragments_queue, start, progress):
    """Arrival times and fragments read from a worker's queue until its None."""
    times, fragments = [], []
    while (fragment := fragments_queue.get()) is not None:
        if len(fragment):
            times.append(time.perf_counter() - start)
            fragments.append(fragment)
            progress.update(len(fragment))
    return times, fragments


def in_worker(work, fragments_queue):
    """Run ``work`` in a thread (as the server runs a stream) ending the queue with None;
    returns a function that joins it and re-raises its error."""
    failure = []

    def run():
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)
        finally:
            fragments_queue.put(None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()

    def join():
        worker.join()
        if failure:
            raise failure[0]
    return join


def run_reference(model, processor, seconds, play_steps, seed, progress):
    """generate + ReferenceStreamer; returns (arrival times, fragments, one-shot decode of all
    the tokens sampled, made after the timed run)."""
    frames = int(round(seconds * model.audio_encoder.config.frame_rate))
    streamer = ReferenceStreamer(model, play_steps)
    fragments_queue = queue.Queue()
    start = time.perf_counter()

    def generate():
        inputs = processor(text=[PROMPT], padding=True, return_tensors='pt').to(model.device)
        torch.manual_seed(seed)
        with torch.inference_mode(), streamer_reattached(model, streamer):
            model.generate(**inputs, streamer=streamer, do_sample=True, guidance_scale=GUIDANCE,
                           top_k=TOP_K, max_new_tokens=frames + model.decoder.num_codebooks - 1)

    streamer.audio_queue = fragments_queue
    join = in_worker(generate, fragments_queue)
    times, fragments = consume(fragments_queue, start, progress)
    join()
    with torch.inference_mode():
        return times, fragments, streamer._decode_cache()


def run_muse(backend, seconds, progress):
    """MusicGenBackend stream; returns (arrival times, fragments, decoder steps, codes)."""
    wanted = int(round(seconds * backend.sample_rate))
    fragments_queue = queue.Queue()
    stats = {}
    start = time.perf_counter()

    def stream_audio():
        produced = 0
        with backend.open_stream(PromptSpec(prompt_id=1, text=PROMPT)) as stream:
            while produced < wanted:
                fragment = stream.next_fragment()[:, 0]
                fragments_queue.put(fragment)
                produced += len(fragment)
            stats['steps'] = stream.decoder_steps

    join = in_worker(stream_audio, fragments_queue)
    times, fragments = consume(fragments_queue, start, progress)
    join()
    return times, fragments, stats['steps']


def codec_costs(model, seconds, play_steps, progress):
    """Seconds spent turning codes into audio at each fragment of a ``seconds`` stream: the
    reference re-decodes every frame so far, the muse decoder only the new ones."""
    frames = int(round(seconds * model.audio_encoder.config.frame_rate))
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, model.decoder.config.vocab_size, (model.decoder.num_codebooks, frames),
                          generator=generator).to(model.device)
    streaming = StreamingCodecDecoder(model.audio_encoder)
    costs = {'reference': [], 'muse': []}
    positions = []
    with torch.inference_mode():
        for end in range(play_steps, frames + 1, play_steps):
            begin = time.perf_counter()
            model.audio_encoder.decode(codes[None, None, :, :end], audio_scales=[None]).audio_values.cpu()
            costs['reference'].append(time.perf_counter() - begin)
            begin = time.perf_counter()
            streaming.push(codes[:, end - play_steps:end]).cpu()
            costs['muse'].append(time.perf_counter() - begin)
            positions.append(end / model.audio_encoder.config.frame_rate)
            progress.update(play_steps)
    return positions, costs


def summarise(runs, sample_rate):
    ttff = [run['times'][0] for run in runs]
    rtf = [sum(len(f) for f in run['fragments']) / sample_rate / run['times'][-1] for run in runs]
    intervals = [b - a for run in runs for a, b in zip(run['times'], run['times'][1:])]
    first_s = [len(run['fragments'][0]) / sample_rate for run in runs]
    step_ms = [1000 * run['times'][-1] / run['steps'] for run in runs]
    return {'ttff': ttff, 'rtf': rtf, 'intervals': intervals, 'first_s': first_s, 'step_ms': step_ms}


def plot(path, results, sample_rate, codec, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (delivered, decoding) = plt.subplots(1, 2, figsize=(13, 5))
    colours = {'reference': 'tab:red', 'muse': 'tab:blue'}
    most_audio = 0.0
    for method, runs in results.items():
        for index, run in enumerate(runs):
            audio = np.cumsum([len(f) for f in run['fragments']]) / sample_rate
            delivered.step([0.0] + run['times'], [0.0] + list(audio), where='post',
                           color=colours[method], alpha=0.8, label=method if index == 0 else None)
            most_audio = max(most_audio, audio[-1])
    delivered.plot([0, most_audio], [0, most_audio], 'k:', label='real time')
    delivered.set_xlabel('wall time since request [s]')
    delivered.set_ylabel('audio delivered [s]')
    delivered.set_title('end to end: generate + decode')
    positions, costs = codec
    for method, values in costs.items():
        decoding.plot(positions, 1000 * np.asarray(values), 'o-', color=colours[method], label=method)
    decoding.set_xlabel('stream position [s]')
    decoding.set_ylabel('codes -> audio per fragment [ms]')
    decoding.set_title('codec decoding per fragment')
    for axes in (delivered, decoding):
        axes.legend()
        axes.grid(alpha=0.3)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='short run (2.5 s of audio, 0.5 s fragments, 2 repeats): minutes on 2 CPU cores')
    parser.add_argument('--seconds', type=float, help='seconds of audio per run (default 20, quick 2.5; < 30)')
    parser.add_argument('--play-steps', type=int, help='decoder steps per fragment (default 50, quick 25)')
    parser.add_argument('--repeats', type=int, help='runs per method (default 3, quick 2)')
    parser.add_argument('--device', default='auto', help="'auto' (cuda when present), 'cpu' or 'cuda'")
    parser.add_argument('--seed', type=int, default=7)
    parser.add_argument('--plot', type=Path, default=Path('out/bench_musicgen.png'),
                        help='PNG: audio delivered over time, codec cost per fragment (default out/bench_musicgen.png)')
    args = parser.parse_args(argv)
    seconds = args.seconds or (2.5 if args.quick else 20.0)
    play_steps = args.play_steps or (25 if args.quick else 50)
    repeats = args.repeats or (2 if args.quick else 3)
    if not 0 < seconds < 29.5:
        parser.error('--seconds must be in (0, 29.5): the baseline is one generate window')
    if play_steps <= 8:
        parser.error('--play-steps must be > 8 (the reference streamer needs play_steps > codebooks)')

    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available()
                          else ('cpu' if args.device == 'auto' else args.device))
    dtype = torch.float16 if device.type == 'cuda' else torch.float32
    machine = (torch.cuda.get_device_name(device) if device.type == 'cuda'
               else f'CPU only, {torch.get_num_threads()} torch threads (no GPU)')
    print(f'musicgen streaming benchmark on {device} [{machine}], {dtype}; {seconds:g} s of audio '
          f'per run, fragments every {play_steps} steps, {repeats} runs per method', flush=True)

    with tqdm(total=3, desc='building musicgen-small (random weights)', unit='stage') as bar:
        tokenizer = build_t5_tokenizer()
        processor = build_processor(tokenizer)
        config = musicgen_small_config()
        bar.update()
        model = random_musicgen(config, seed=0)
        bar.update()
        model = model.to(device=device, dtype=dtype)
        bar.update()
    parameters = sum(p.numel() for p in model.parameters())
    decoder = model.decoder.config
    print(f'model: {parameters / 1e6:.1f} M parameters; decoder {decoder.num_hidden_layers} layers x '
          f'{decoder.hidden_size}, {decoder.num_attention_heads} heads, ffn {decoder.ffn_dim}, '
          f'{decoder.num_codebooks} codebooks of {decoder.vocab_size}; codec '
          f'{model.audio_encoder.config.sampling_rate} Hz, hop {model.audio_encoder.config.hop_length}',
          flush=True)
    backend = MusicGenBackend.from_model(model, processor, device=device, dtype=dtype,
                                         play_steps=play_steps, guidance_scale=GUIDANCE, top_k=TOP_K,
                                         seed=args.seed)
    sample_rate = backend.sample_rate
    print(f'muse streamer: codec look-ahead {backend.lookahead_frames} frames, first fragment '
          f'{play_steps - decoder.num_codebooks + 1 - backend.lookahead_frames} frames', flush=True)

    # Warm-up (allocator, kernels, lazy initialisation) outside the timed runs.
    with tqdm(total=2, desc='warm-up', unit='run') as bar:
        with torch.inference_mode():
            model.generate(**processor(text=[PROMPT], return_tensors='pt').to(device), do_sample=True,
                           guidance_scale=GUIDANCE, top_k=TOP_K, max_new_tokens=8)
        bar.update()
        with backend.open_stream(PromptSpec(prompt_id=0, text=PROMPT)) as stream:
            stream.next_fragment()
        bar.update()
    streams_opened = 1

    results = {'reference': [], 'muse': []}
    for repeat in range(repeats):
        order = ('reference', 'muse') if repeat % 2 == 0 else ('muse', 'reference')
        seed = args.seed + streams_opened    # the seed the backend gives its next stream
        for method in order:
            desc = f'run {repeat + 1}/{repeats} {method}'
            with tqdm(total=int(seconds * sample_rate), desc=desc, unit='sample', unit_scale=True) as bar:
                if method == 'reference':
                    times, fragments, one_shot = run_reference(model, processor, seconds, play_steps,
                                                               seed, bar)
                    steps = int(round(seconds * backend.frame_rate)) + decoder.num_codebooks - 1
                else:
                    times, fragments, steps = run_muse(backend, seconds, bar)
                    streams_opened += 1
            results[method].append({'times': times, 'fragments': fragments, 'steps': steps})
            audio_s = sum(len(f) for f in fragments) / sample_rate
            print(f'  run {repeat + 1} {method}: first fragment after {times[0]:.2f} s, '
                  f'{audio_s:.2f} s of audio in {times[-1]:.2f} s (RTF {audio_s / times[-1]:.3f}), '
                  f'{1000 * times[-1] / steps:.1f} ms/step', flush=True)
        # Both sampled the same tokens; measure each against the one-shot decode of them, over
        # all but the last frames (generate samples those next to its end-of-window padding).
        compared = len(one_shot) - 10 * backend.hop_length
        errors = {}
        for method in ('reference', 'muse'):
            audio = np.concatenate(results[method][-1]['fragments'])[:compared]
            errors[method] = float(np.abs(audio - one_shot[:len(audio)]).max())
            results[method][-1]['error'] = errors[method]
        print(f'  run {repeat + 1}: max |fragments - one-shot decode of the same tokens| over '
              f'{compared / sample_rate:.2f} s: reference {errors["reference"]:.1e}, '
              f'muse {errors["muse"]:.1e}', flush=True)

    stats = {method: summarise(runs, sample_rate) for method, runs in results.items()}
    print(f'\nresults on {device} [{machine}] ({dtype}, random weights, {seconds:g} s per run, '
          f'play_steps {play_steps}, {repeats} runs):')
    header = (f'{"method":10s} {"TTFF med":>9s} {"TTFF p95":>9s} {"1st frag":>9s} {"RTF med":>8s} '
              f'{"RTF min":>8s} {"interval med":>13s} {"interval p95":>13s} {"ms/step":>8s}')
    print(header)
    for method, s in stats.items():
        print(f'{method:10s} {statistics.median(s["ttff"]):8.2f}s {percentile(s["ttff"], 95):8.2f}s '
              f'{statistics.median(s["first_s"]):8.2f}s {statistics.median(s["rtf"]):8.3f} '
              f'{min(s["rtf"]):8.3f} {statistics.median(s["intervals"]):12.2f}s '
              f'{percentile(s["intervals"], 95):12.2f}s {statistics.median(s["step_ms"]):8.1f}')
    ref, ours = stats['reference'], stats['muse']
    print(f'ratios: muse real-time factor / reference = '
          f'{statistics.median(ours["rtf"]) / statistics.median(ref["rtf"]):.2f}; '
          f'reference TTFF / muse TTFF = {statistics.median(ref["ttff"]) / statistics.median(ours["ttff"]):.2f}; '
          f'reference p95 interval / muse = '
          f'{percentile(ref["intervals"], 95) / percentile(ours["intervals"], 95):.2f} (> 1: muse better)')

    codec_seconds = 10.0 if args.quick else 29.0
    with tqdm(total=int(codec_seconds * backend.frame_rate), desc='codec decoding per fragment',
              unit='frame') as bar:
        codec = codec_costs(model, codec_seconds, play_steps, bar)
    positions, costs = codec
    print(f'\ncodes -> audio for a {codec_seconds:g} s stream, a fragment every {play_steps} frames '
          f'({len(positions)} fragments):')
    for method, values in costs.items():
        print(f'{method:10s} per fragment median {1000 * statistics.median(values):7.1f} ms, '
              f'p95 {1000 * percentile(values, 95):7.1f} ms, last {1000 * values[-1]:7.1f} ms, '
              f'total {sum(values):6.2f} s')
    print(f'ratio reference / muse total decoding time: {sum(costs["reference"]) / sum(costs["muse"]):.1f}')
    if device.type == 'cpu':
        print('note: CPU numbers (no GPU on this machine); RTF < 1 means slower than real time here.')
    if args.plot:
        plot(args.plot, results, sample_rate, codec,
             f'musicgen-small (random weights) on {machine}, fragments every {play_steps} steps')
        print(f'plot: {args.plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
