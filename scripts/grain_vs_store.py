"""Grain or our own sampler over the token store: the numbers behind the choice.

    pip install grain                                     # not a dependency of guppy-jax
    python scripts/grain_vs_store.py --data data/generated/g2 --batches 200

Over one prepared data directory's token store (guppy_jax.data.store.StoredSamples), with
the same batch shape, both pipelines shuffle by a seed, pack conversations into rows with
segment ids and positions, and batch:

    store    guppy_jax.data.batches.Batches: a permutation per epoch, rows laid out from the
             conversations' lengths (greedy, in order), only the rows' tokens read
    grain    grain.MapDataset.source(samples).shuffle(seed).repeat() -> to_iter_dataset() ->
             grain.experimental.FirstFitPackIterDataset (first fit over a few open rows) ->
             batch
    grain, padded   the same source and shuffle, one conversation a row (no packing), to
             see what the packing transform costs apart from the rest

For each it prints the time to build it and give its first batch, the median time per batch
over --batches batches, the share of real tokens in the rows, and whether a restored
position (our `position`/`seek`; grain's `get_state`/`set_state`) gives the very next batch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guppy_jax.data.batches import Batches  # noqa: E402
from guppy_jax.data.store import StoredSamples  # noqa: E402


def timed(make, n: int):
    """(seconds to build and take the first batch, median seconds per later batch, the batches)."""
    start = time.perf_counter()
    it = make()
    first = next(it)
    ready = time.perf_counter() - start
    times, batches = [], [first]
    for _ in range(n):
        t = time.perf_counter()
        batches.append(next(it))
        times.append(time.perf_counter() - t)
    return ready, statistics.median(times), batches, it


def grain_pipeline(samples, batch_size: int, seq_len: int, seed: int):
    import grain
    ds = (grain.MapDataset.source(samples).shuffle(seed=seed).repeat()
          .map(lambda ids: {"inputs": ids}).to_iter_dataset())
    packed = grain.experimental.FirstFitPackIterDataset(ds, length_struct={"inputs": seq_len},
                                                        num_packing_bins=batch_size, shuffle_bins=False)
    return iter(packed.batch(batch_size, drop_remainder=True))


def grain_padded(samples, batch_size: int, seq_len: int, seed: int):
    import grain

    def pad(ids):
        row = np.zeros(seq_len, np.int32)
        row[:len(ids)] = ids
        return row
    return iter(grain.MapDataset.source(samples).shuffle(seed=seed).repeat().map(pad).batch(batch_size)
                .to_iter_dataset())


def fill(batch: dict, key: str) -> float:
    return float((batch[key] > 0).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a prepared data directory (with a token store)")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args(argv)
    samples = StoredSamples(args.data, "train", args.seq_len)
    B, T, n = args.batch_size, args.seq_len, args.batches
    print(f"{len(samples):,} conversations; batches of {B} x {T}, {n} timed")

    ours = timed(lambda: Batches(samples, B, T, packed=True, seed=0), n)
    saved = ours[3].position
    want = next(ours[3])
    again = Batches(samples, B, T, packed=True, seed=0)
    again.seek(saved)
    ours_resumes = all(np.array_equal(want[k], v) for k, v in next(again).items())
    print(f"store: first batch in {ours[0]:.3f} s, {ours[1] * 1e3:.2f} ms a batch, "
          f"{np.mean([fill(b, 'segment_ids') for b in ours[2]]):.1%} real tokens, resumes exactly: {ours_resumes}")
    try:
        import grain  # noqa: F401
    except ImportError:
        print("grain: not installed (pip install grain)")
        return 0
    theirs = timed(lambda: grain_pipeline(samples, B, T, 0), n)
    state = theirs[3].get_state()
    want = next(theirs[3])
    again = grain_pipeline(samples, B, T, 0)
    again.set_state(state)
    got = next(again)
    grain_resumes = all(np.array_equal(want[k], got[k]) for k in want)
    print(f"grain: first batch in {theirs[0]:.3f} s, {theirs[1] * 1e3:.2f} ms a batch, "
          f"{np.mean([fill(b, 'inputs_segment_ids') for b in theirs[2]]):.1%} real tokens, "
          f"resumes exactly: {grain_resumes}; keys {sorted(theirs[2][0])}")
    padded = timed(lambda: grain_padded(samples, B, T, 0), n)
    print(f"grain, padded (no packing): first batch in {padded[0]:.3f} s, {padded[1] * 1e3:.2f} ms a batch, "
          f"{np.mean([float((b > 0).mean()) for b in padded[2]]):.1%} real tokens")
    print(f"median per batch, grain (packed) over store: {theirs[1] / ours[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
