"""Benchmark of the musicgen backend with many listeners: continuous batching (one engine
pass steps every stream) against the serial path (each stream steps alone, taking turns on
the model through a FIFO lock), on the real musicgen-small architecture with random weights.

    nice -n 10 ./muse.sh exec python bench/bench_batching.py [--quick] [--steps S]
        [--streams 1,2,4,8,16] [--device auto|cpu|cuda] [--dtype auto|float32|float16]

For every N in ``--streams`` and both paths, N streams (N reader threads, as the server runs
sessions) each pull ``--steps`` decoder steps of audio after one warm-up fragment; the paths
alternate per N to share out machine noise. Reported per (N, path): aggregate real-time factor
(seconds of audio made by all streams per second of wall time; 50 decoder steps = 1 s), the
per-stream step latency (wall time per step of one stream: a stream is real-time when it is
below 20 ms), and the batched/serial throughput ratio; then the largest N at an RTF of at
least 1.2 per stream (each stream at 1.2x real time) for both paths, the cost of a morphing
step (every stream of the largest batch moving to a new text) against a plain step, and the
exactness check: stream 0 has the same seed in every run, so its audio must be the same alone
(serial and batched) and inside the largest batch.

Weights are random (speed does not depend on their values); CPU numbers are CPU numbers.
"""

import argparse
import statistics
import sys
import threading
import time

import numpy as np
import torch

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
    (wall seconds, stream 0's audio, backend)."""
    backend = MusicGenBackend.from_model(model, processor, device=device, play_steps=steps,
                                         batching=batching, seed=seed, morph_s=10.0)
    opened = [backend.open_stream(PromptSpec(i, PROMPTS[i % len(PROMPTS)])) for i in range(streams)]
    audio = [[] for _ in range(streams)]
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
    return wall, in_model, np.concatenate(audio[0]), backend, opened


def close_all(backend, opened):
    for stream in opened:
        stream.close()
    backend.close()


def morph_cost(model, processor, streams: int, steps: int, device):
    """Mean engine step time with every stream morphing vs. plain, same batch."""
    _, _, _, backend, opened = run(model, processor, True, streams, steps, device)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='few steps, N up to 8')
    parser.add_argument('--steps', type=int, default=None,
                        help='timed decoder steps per stream (default 6 quick, 25 full)')
    parser.add_argument('--streams', default=None,
                        help='comma-separated N (default 1,2,4,8 quick, 1,2,4,8,16 full)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: leave)')
    args = parser.parse_args(argv)
    steps = args.steps or (6 if args.quick else 25)
    counts = [int(n) for n in (args.streams or ('1,2,4,8' if args.quick else '1,2,4,8,16')).split(',')]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = 'cuda' if args.device == 'auto' and torch.cuda.is_available() else (
        'cpu' if args.device == 'auto' else args.device)
    print(f'building musicgen-small (random weights) on {device}, float32 on CPU; '
          f'{torch.get_num_threads()} torch threads; {steps} timed steps per stream', flush=True)
    tokenizer = build_t5_tokenizer()
    model = random_musicgen(musicgen_small_config())
    processor = build_processor(tokenizer)

    rows = []
    stream0 = {}
    for streams in counts:
        for batching in ((False, True) if streams % 2 else (True, False)):
            wall, in_model, first, backend, opened = run(model, processor, batching, streams,
                                                         steps, device)
            close_all(backend, opened)
            name = 'batched' if batching else 'serial'
            stream0[(streams, name)] = first
            rtf = streams * steps / FRAME_RATE / wall
            model_rtf = streams * steps / FRAME_RATE / in_model
            rows.append((streams, name, rtf, wall / steps * 1000, model_rtf))
            print(f'  N={streams:2d} {name:7s} wall {wall:7.2f} s  aggregate RTF {rtf:6.3f}  '
                  f'per-stream step {wall / steps * 1000:8.1f} ms  decoder-only RTF '
                  f'{model_rtf:6.3f}', flush=True)

    print('\nend to end (decoder steps + codec in the readers\' threads), and decoder passes only')
    print('N   serial RTF  batched RTF  serial ms/step  batched ms/step  batched/serial  '
          'decoder-only serial  batched  batched/serial')
    by = {(n, name): (rtf, ms, model_rtf) for n, name, rtf, ms, model_rtf in rows}
    for streams in counts:
        s_rtf, s_ms, s_model = by[(streams, 'serial')]
        b_rtf, b_ms, b_model = by[(streams, 'batched')]
        print(f'{streams:<3d} {s_rtf:10.3f}  {b_rtf:11.3f}  {s_ms:14.1f}  {b_ms:15.1f}  '
              f'{b_rtf / s_rtf:13.2f}x  {s_model:19.3f}  {b_model:7.3f}  {b_model / s_model:13.2f}x')
    for name in ('serial', 'batched'):
        fit = [n for n in counts if by[(n, name)][0] / n >= REALTIME_MARGIN]
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

    reference = stream0[(1, 'serial')]
    for key in ((1, 'batched'), (largest, 'batched'), (largest, 'serial')):
        other = stream0[key]
        length = min(len(reference), len(other))
        same = np.array_equal(reference[:length], other[:length])
        print(f'exactness: stream 0 at N={key[0]} {key[1]} vs alone serial: '
              f'{"identical audio (same tokens)" if same else "DIFFERENT"} '
              f'({length} samples, max |diff| {np.abs(reference[:length] - other[:length]).max():.2e})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
