"""mclust's 14 models at scale (issue 17): per-iteration time against 'full', and a
selection grid's passes against the sum of separate fits.

1. Per iteration: 1,000,000 x 16, K=16 (bench_em.py's mixture, float64, 20 chunks,
   persisted), each model fitted for ``--iters`` EM iterations from the same k-means|| start;
   the median of ``iteration_seconds_`` (iterations 2..) against 'full' measured in the same
   run, models in random order over ``--rounds`` rounds.
2. Selection: ``select_model`` over the 14 models x K = 1..9 on Zarr data (``--grid-n``
   rows x 4), streamed (cache=False): passes over the data the grid made, against the sum
   of the passes its candidates would make as separate fits (their ``n_passes``).

Usage::

    python benchmarks/bench_mclust.py                  # about 10 minutes
    python benchmarks/bench_mclust.py --n 100000 --grid-n 20000 --iters 3
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_em import make_data  # noqa: E402

MODELS = ["EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV"]


def per_iteration(args):
    import dask.array as da

    from daskem import GaussianMixture

    X = make_data(args.n, args.d, args.k, np.float64)
    Xd = da.from_array(X, chunks=(-(-args.n // 20), args.d)).persist()
    names = ["full"] + MODELS
    times = {m: [] for m in names}
    rng = np.random.RandomState(0)
    for r in range(args.rounds):
        for m in rng.permutation(names):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = GaussianMixture(args.k, covariance_type=m, init_params="k-means||", max_iter=args.iters,
                                     tol=0, random_state=0, cache=False, acceleration=None).fit(Xd)
            times[m].extend(gm.iteration_seconds_[1:])
        print(f"round {r + 1} done", file=sys.stderr, flush=True)
    full = statistics.median(times["full"])
    print(f"Per EM iteration, {args.n:,} x {args.d}, K={args.k}, float64, 20 chunks persisted, "
          f"threaded scheduler; median of iterations 2..{args.iters} over {args.rounds} rounds.\n")
    print("| model | seconds per iteration | against 'full' |")
    print("|---|---|---|")
    print(f"| full | {full:.3f} | 1.00 |")
    for m in MODELS:
        t = statistics.median(times[m])
        print(f"| {m} | {t:.3f} | {t / full:.2f} |")
    worst = max(statistics.median(times[m]) for m in MODELS) / full
    print(f"\nSlowest model against 'full': **{worst:.2f}x** (target: at most 1.5x).\n")


def selection(args):
    import zarr

    import daskem
    from daskem import _initialization, select_model

    rng = np.random.RandomState(1)
    centres = rng.randn(5, 4) * 3
    n = args.grid_n
    X = centres[rng.randint(5, size=n)] + rng.randn(n, 4) @ rng.randn(4, 4) * 0.5
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "grid.zarr")
        z = zarr.create_array(path, shape=X.shape, chunks=(max(n // 8, 1), 4), dtype="f8")
        z[:] = X
        # the stored chunks as they are (the default rule would merge them into one)
        data = daskem.read(path, chunks=max(n // 8, 1))
        rows = []
        for acceleration in ("auto", None):
            # each grid from scratch: no hierarchical partitions kept from the one before
            _initialization._HC_CACHE.clear()
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table, best = select_model(data, n_components=range(1, 10), covariance_types="all",
                                           random_state=0, cache=False, acceleration=acceleration)
            seconds = time.perf_counter() - start
            rows.append((acceleration, table, best, seconds))
    print(f"select_model over the 14 models x K = 1..9 ({len(rows[0][1])} candidates) on Zarr data "
          f"({n:,} x 4, {data.numblocks[0]} chunks, streamed (cache=False), otherwise defaults.\n")
    print("| acceleration | wall (s) | passes of the grid | sum of the candidates' passes as separate "
          "fits | ratio | best by BIC | failed candidates |")
    print("|---|---|---|---|---|---|---|")
    for acceleration, table, best, seconds in rows:
        separate = int(table.n_passes.sum())
        grid = table.attrs["n_passes"]
        print(f"| {acceleration!r} | {seconds:.1f} | {grid} | {separate} | **{separate / grid:.1f}x** "
              f"| {best.covariance_type}, K={best.n_components} | {int(table.error.notna().sum())} |")
    print()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--grid-n", type=int, default=200_000)
    p.add_argument("--sections", default="iteration,selection")
    args = p.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.2f}.\n")
    if "iteration" in args.sections:
        per_iteration(args)
    if "selection" in args.sections:
        selection(args)


if __name__ == "__main__":
    main()
