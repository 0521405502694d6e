"""Benchmark of the musicgen backend with many listeners: continuous batching (one engine
pass steps every stream) against the serial path (each stream steps alone, taking turns on
the model through a FIFO lock), on the real musicgen-small architecture with random weights.

    nice -n 10 ./muse.sh exec python bench/bench_batching.py [--quick] [--steps S] [--pairs P]
        [--streams 1,2,4,8,16] [--device auto|cpu|cuda] [--threads T]

For every N in ``--streams``, N streams (N reader threads, as the server runs sessions) each
pull ``--steps`` decoder steps of audio (one fragment) after one warm-up fragment, once
serially and once batched: a *pair*. ``--pairs`` pairs per N, in alternating order (serial
first, then batched first, ...), so a machine busy with other work slows both halves of a
pair alike; the batched/serial ratio reported is the median of the per-pair ratios (with
their spread), the other figures medians over the pairs. Reported per N: per-stream step
latency (wall time per step of one stream: real-time below 20 ms), aggregate real-time factor
(seconds of audio made by all streams per second of wall time; 50 decoder steps = 1 s),
end-to-end (decoder + codec) and decoder-only ratios; then the largest N at an RTF of at least
1.2 per stream (each stream at 1.2x real time) for both paths, the cost of a morphing step
(every stream of the largest batch moving to a new text) against a plain step, and the
exactness check: stream 0 has the same seed in every run, so its tokens must be the same
alone (serial and batched) and inside the largest batch (its audio too, up to the rounding of
a codec pass over several streams).

Weights are random (speed does not depend on their values); CPU numbers are CPU numbers.
"""

import argparse
import os
import statistics
import sys
import threading
import time

# Threads that wait for work sleep instead of spinning: the batched path has one engine thread
# and N reader threads, each with its own OpenMP team, and spinning teams of idle readers took
# the cores from the engine's pass (N=8 on 2 busy cores: 5.3x with PASSIVE vs 3.2x without).
# Set before torch loads OpenMP; it applies to the serial and the batched runs alike.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402 - after OMP_WAIT_POLICY
import torch  # noqa: E402

from muse_server.backends import PromptSpec
from muse_server.backends.musicgen import MusicGenBackend
from muse_server.backends.musicgen_random import (build_processor, build_t5_tokenizer,
                                                        musicgen_small_config, random_musicgen)

PROMPTS = ('chill techno with soft pads and steady drums for walking, 118 bpm',
           'calm ambient piano', 'upbeat pop for cycling, 128 bpm', 'lofi hip hop beats')
MORPH_TO = 'fast drums and bass for stairs, 140 bpm'
FRAME_RATE = 50.0
REALTIME_MARGIN = 1.2


def run(model, processor, batching: bool, streams: int, steps: int, device, seed: int = 7):
    """N streams, each pulling one warm-up fragment and then ``steps`` steps. Returns
    (wall seconds, seconds in decoder passes, stream 0's audio, stream 0's codes, backend,
    streams)."""
    backend = MusicGenBackend.from_model(model, processor, device=device, play_steps=steps,
                                         batching=batching, seed=seed,
                                         morph_s=10.0)
    opened = [backend.open_stream(PromptSpec(i, PROMPTS[i % len(PROMPTS)])) for i in range(streams)]
    audio = [[] for _ in range(streams)]
    codes0, codec0, decode = [], opened[0]._codec, backend.decode

    def recording_decode(codec, codes):
        if codec is codec0:
            codes0.append(codes.clone())
        return decode(codec, codes)

    backend.decode = recording_decode
    warm = threading.Barrier(streams + 1)
    go = threading.Barrier(streams + 1)
    done = threading.Barrier(streams + 1)
    errors = []

    def reader(index):
        try:
            audio[index].append(opened[index].next_fragment())
            warm.wait()
            go.wait()
            audio[index].append(opened[index].next_fragment())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            warm.abort()
            go.abort()
        finally:
            try:
                done.wait()
            except threading.BrokenBarrierError:
                pass

    def model_seconds():
        return (backend.engine.stats.step_seconds if batching
                else backend.serial_seconds_total)

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(streams)]
    for thread in threads:
        thread.start()
    warm.wait()
    started, in_model = time.perf_counter(), model_seconds()
    go.wait()
    done.wait()
    wall = time.perf_counter() - started
    in_model = model_seconds() - in_model
    if errors:
        raise errors[0]
    return (wall, in_model, np.concatenate(audio[0]), torch.cat(codes0, dim=-1), backend,
            opened)


def close_all(backend, opened):
    for stream in opened:
        stream.close()
    backend.close()


def morph_cost(model, processor, streams: int, steps: int, device):
    """Mean engine step time with every stream morphing vs. plain, same batch."""
    _, _, _, _, backend, opened = run(model, processor, True, streams, steps, device)
    plain = [seconds for size, seconds in list(backend.engine.stats.recent)[-steps:]]
    for index, stream in enumerate(opened):
        stream.retarget(PromptSpec(100 + index, MORPH_TO))
    before = backend.engine.stats.morph_steps
    threads = [threading.Thread(target=stream.next_fragment) for stream in opened]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    morphing = [seconds for size, seconds in list(backend.engine.stats.recent)[-steps:]]
    assert backend.engine.stats.morph_steps - before >= steps * streams
    close_all(backend, opened)
    return statistics.median(plain), statistics.median(morphing)


def pass_cost(model, counts, repeats: int = 3):
    """Seconds of one batched decoder pass (no sampling, no codec, no threads) for each N,
    interleaved and best of ``repeats``: the batching efficiency itself."""
    from muse_server.backends.musicgen_decoder import BatchCache, CrossKV, DecoderPass
    from muse_server.backends.musicgen_generation import encode_text
    decoder_pass = DecoderPass(model.decoder)
    dtype = next(model.decoder.parameters()).dtype
    device = next(model.decoder.parameters()).device
    best = {}
    with torch.inference_mode():
        condition = encode_text(model, build_t5_tokenizer(), PROMPTS[0], True)
        cross = decoder_pass.cross_kv(condition.hidden, condition.mask)
        for _ in range(repeats):
            for streams in counts:
                rows = 2 * streams
                cache = BatchCache(decoder_pass.num_layers, decoder_pass.heads,
                                   decoder_pass.head_dim, decoder_pass.scaling, dtype, device,
                                   model.decoder.config.max_position_embeddings)
                positions = torch.arange(rows, device=device) + 20      # ragged rows
                ids = torch.zeros((rows, decoder_pass.num_codebooks, 1), dtype=torch.long,
                                  device=device)
                cache.select(slice(0, rows), positions)
                started = time.perf_counter()
                decoder_pass.forward(decoder_pass.embed(ids, positions[:, None]), cache,
                                     CrossKV.stacked([cross] * streams))
                seconds = time.perf_counter() - started
                best[streams] = min(best.get(streams, seconds), seconds)
    return best


def measure(model, processor, counts, steps: int, pairs: int, device):
    """``pairs`` serial/batched pairs per N, in alternating order. Returns
    {N: {'serial'|'batched': [(wall, decoder seconds), ...]}} and stream 0's (audio, codes)
    of the first run of each (N, path)."""
    results, stream0 = {}, {}
    for streams in counts:
        results[streams] = {'serial': [], 'batched': []}
        for pair in range(pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            for batching in order:
                wall, in_model, audio, codes, backend, opened = run(
                    model, processor, batching, streams, steps, device)
                close_all(backend, opened)
                name = 'batched' if batching else 'serial'
                results[streams][name].append((wall, in_model))
                stream0.setdefault((streams, name), (audio, codes))
                print(f'  N={streams:2d} pair {pair + 1} {name:7s} wall {wall:7.2f} s  '
                      f'per-stream step {wall / steps * 1000:8.1f} ms  aggregate RTF '
                      f'{streams * steps / FRAME_RATE / wall:6.3f}', flush=True)
    return results, stream0


def spread(values) -> str:
    return f'{statistics.median(values):5.2f}x [{min(values):.2f}-{max(values):.2f}]'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='few steps and pairs, N up to 8')
    parser.add_argument('--steps', type=int, default=None,
                        help='timed decoder steps per stream (default 6 quick, 25 full)')
    parser.add_argument('--pairs', type=int, default=None,
                        help='serial/batched pairs per N (default 3 quick, 5 full)')
    parser.add_argument('--streams', default=None,
                        help='comma-separated N; 1 is always added '
                             '(default 1,2,4,8 quick, 1,2,4,8,16 full)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: leave)')
    args = parser.parse_args(argv)
    steps = args.steps or (6 if args.quick else 25)
    pairs = args.pairs or (3 if args.quick else 5)
    counts = [int(n) for n in (args.streams or ('1,2,4,8' if args.quick else '1,2,4,8,16')).split(',')]
    counts = sorted({1, *counts})   # N = 1 is the baseline of the throughput and exactness checks
    if args.threads:
        torch.set_num_threads(args.threads)
    device = 'cuda' if args.device == 'auto' and torch.cuda.is_available() else (
        'cpu' if args.device == 'auto' else args.device)
    print(f'musicgen-small (random weights) on {device}, float32 on CPU; '
          f'{torch.get_num_threads()} torch threads, OMP_WAIT_POLICY '
          f'{os.environ["OMP_WAIT_POLICY"]}; {steps} timed steps per stream (one '
          f'fragment); {pairs} serial/batched pairs per N', flush=True)
    tokenizer = build_t5_tokenizer()
    model = random_musicgen(musicgen_small_config())
    processor = build_processor(tokenizer)
    started = time.perf_counter()

    results, stream0 = measure(model, processor, counts, steps, pairs, device)
    print(f'\nmedians over {pairs} pairs; ratio = serial wall / batched wall of the same pair '
          '(median [min-max]); RTF = audio seconds of all streams per wall second')
    print('N   serial ms/step  batched ms/step  serial RTF  batched RTF  batched/serial '
          '(end to end)  (decoder passes only)')
    aggregate = {}
    for streams in counts:
        serial, batched = results[streams]['serial'], results[streams]['batched']
        wall_ratios = [s[0] / b[0] for s, b in zip(serial, batched)]
        model_ratios = [s[1] / b[1] for s, b in zip(serial, batched)]
        s_wall = statistics.median(w for w, _ in serial)
        b_wall = statistics.median(w for w, _ in batched)
        audio_s = streams * steps / FRAME_RATE
        aggregate[streams] = {'serial': audio_s / s_wall, 'batched': audio_s / b_wall}
        print(f'{streams:<3d} {s_wall / steps * 1000:14.1f}  {b_wall / steps * 1000:15.1f}  '
              f'{audio_s / s_wall:10.3f}  {audio_s / b_wall:11.3f}  {spread(wall_ratios):>26s}  '
              f'{spread(model_ratios):>21s}')
    for name in ('serial', 'batched'):
        fit = [n for n in counts if aggregate[n][name] / n >= REALTIME_MARGIN]
        print(f'max N with every stream at RTF >= {REALTIME_MARGIN} ({name}): '
              f'{max(fit) if fit else 0} (of N measured: {counts})')

    largest = counts[-1]
    passes = pass_cost(model, counts)
    print('\ndecoder pass alone (best of 3, interleaved): ' + ', '.join(
        f'N={n}: {seconds * 1000:.0f} ms' for n, seconds in passes.items()))
    for streams in counts[1:]:
        print(f'  per-stream throughput N={streams} vs N=1: '
              f'{streams * passes[1] / passes[streams]:.2f}x')
    plain, morphing = morph_cost(model, processor, largest, steps, device)
    print(f'\nmorphing step, N={largest}: {morphing * 1000:.1f} ms vs plain {plain * 1000:.1f} ms '
          f'({morphing / plain:.2f}x)')

    reference_audio, reference_codes = stream0[(1, 'serial')]
    for key in ((1, 'batched'), (largest, 'batched'), (largest, 'serial')):
        audio, codes = stream0[key]
        frames = min(reference_codes.shape[-1], codes.shape[-1])
        same = torch.equal(reference_codes[:, :frames], codes[:, :frames])
        length = min(len(reference_audio), len(audio))
        diff = np.abs(reference_audio[:length] - audio[:length]).max()
        print(f'exactness: stream 0 at N={key[0]} {key[1]} vs alone serial: '
              f'{"same tokens" if same else "DIFFERENT TOKENS"} ({frames} frames), audio max '
              f'|diff| {diff:.2e} over {length} samples')
    print(f'\nbench time {time.perf_counter() - started:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
