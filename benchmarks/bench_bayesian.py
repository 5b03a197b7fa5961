"""Per-iteration speed of daskem's BayesianGaussianMixture against scikit-learn's (issue 15).

One run, on the same data (bench_em.py's mixture: 1,000,000 x 16, K=16, full covariance,
float64), the two libraries alternating for ``--rounds`` rounds:

* scikit-learn: its own per-iteration clock (``verbose=2, verbose_interval=1``), the median
  over iterations 2..max_iter (the first includes its initialisation);
* daskem: the median of ``iteration_seconds_`` (one pass, the reduction, the variational
  M-step and lower bound), on the threaded scheduler with 20 row chunks.

Both run ``max_iter`` iterations with tol=0 from a random-responsibility start.

``--starts``: whole fits of daskem's BayesianGaussianMixture with its defaults from each
start instead ('coreset', the default, and 'k-means||'), on bench_solution.py's overlapping
clusters (``--start-cases``, full and diag, seeds ``--seeds``): wall time, iterations, passes,
the final lower bound and whether it converged.

Usage::

    python benchmarks/bench_bayesian.py --rounds 3          # about 3 minutes
    python benchmarks/bench_bayesian.py --n 100000 --rounds 1  # quick
    python benchmarks/bench_bayesian.py --starts            # about 3 minutes
"""

import argparse
import contextlib
import io
import os
import re
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_em import make_data  # noqa: E402


def sklearn_seconds(X, k, max_iter):
    from sklearn.mixture import BayesianGaussianMixture

    est = BayesianGaussianMixture(n_components=k, max_iter=max_iter, tol=0, init_params="random",
                                  random_state=0, verbose=2, verbose_interval=1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X)
    lapses = {int(i): float(t) for i, t in
              re.findall(r"Iteration (\d+)\s+time lapse ([0-9.eE+-]+)s", out.getvalue())}
    return [t for i, t in lapses.items() if i >= 2]


def daskem_seconds(X, k, max_iter, chunks):
    import dask.array as da

    from daskem import BayesianGaussianMixture

    est = BayesianGaussianMixture(n_components=k, max_iter=max_iter, tol=0, init_params="random",
                                  random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(da.from_array(X, chunks=(-(-len(X) // chunks), X.shape[1])))
    return list(est.iteration_seconds_[1:])


def whole_fits(case, covariance_type, init_params, seeds):
    """(wall s, iterations, passes, lower bound, converged) of default fits from one start."""
    import dask.array as da
    from bench_solution import CASES, CHUNKS, overlapping_data

    from daskem import BayesianGaussianMixture

    n, d, k = CASES[case]
    X = da.from_array(overlapping_data(n, d, k, np.float64), chunks=(-(-n // CHUNKS), d))
    fits = []
    for seed in seeds:
        est = BayesianGaussianMixture(n_components=k, covariance_type=covariance_type,
                                      init_params=init_params, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            est.fit(X)
            wall = time.perf_counter() - t0
        fits.append((wall, est.n_iter_, est.n_passes_, float(est.lower_bound_), est.converged_))
    return fits


def starts_report(args):
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"BayesianGaussianMixture whole fits by start, defaults (tol=1e-3 on the total lower "
          f"bound, max_iter=100), threaded scheduler; {time.strftime('%Y-%m-%d %H:%M')}, load "
          f"{os.getloadavg()[0]:.2f}. Per seed {args.seeds}.\n")
    print("| data | covariance | start | wall (s) | iterations | passes | lower bound "
          "| below the best | converged |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.start_cases.split(","):
        for cov in ("full", "diag"):
            runs = {init: whole_fits(case, cov, init, seeds) for init in ("coreset", "k-means||")}
            best = max(f[3] for fits in runs.values() for f in fits)
            for init, fits in runs.items():
                def col(i, fmt, fits=fits):
                    return ", ".join(format(f[i], fmt) for f in fits)
                below = ", ".join(f"{best - f[3]:.2g}" for f in fits)
                print(f"| {case} | {cov} | {init} | {col(0, '.2f')} | {col(1, 'd')} | {col(2, 'd')} "
                      f"| {col(3, '.1f')} | {below} | {sum(f[4] for f in fits)}/{len(fits)} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sklearn-iter", type=int, default=3)
    p.add_argument("--daskem-iter", type=int, default=6)
    p.add_argument("--starts", action="store_true", help="whole fits by start instead")
    p.add_argument("--start-cases", default="slow,big")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args(argv)
    if args.starts:
        starts_report(args)
        return
    X = make_data(args.n, args.d, args.k, np.float64)
    sk, de = [], []
    for r in range(args.rounds):
        steps = [lambda: sk.extend(sklearn_seconds(X, args.k, args.sklearn_iter)),
                 lambda: de.extend(daskem_seconds(X, args.k, args.daskem_iter, args.chunks))]
        for step in steps if r % 2 == 0 else steps[::-1]:
            step()
        print(f"round {r + 1}: scikit-learn {statistics.median(sk):.3f} s, daskem "
              f"{statistics.median(de):.3f} s", file=sys.stderr, flush=True)
    s, d = statistics.median(sk), statistics.median(de)
    print(f"BayesianGaussianMixture, full covariance, {args.n:,} x {args.d}, K={args.k}, float64, "
          f"{args.rounds} rounds alternating; {time.strftime('%Y-%m-%d %H:%M')}, load "
          f"{os.getloadavg()[0]:.2f}.\n")
    print("| library | seconds per iteration (median) | iterations timed |")
    print("|---|---|---|")
    print(f"| scikit-learn 1.9 | {s:.3f} | {len(sk)} |")
    print(f"| daskem (threaded scheduler, {args.chunks} chunks) | {d:.3f} | {len(de)} |")
    print(f"\ndaskem is **{s / d:.1f}x** faster per iteration (target: at least 8x).")


if __name__ == "__main__":
    main()
