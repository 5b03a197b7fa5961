"""Per-iteration time on real Dask worker processes against the threaded scheduler (issue 18).

distributed's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which made every
multi-megabyte temporary of the kernel's row-block loop a fresh mapping; the kernels now
allocate nothing per block. This measures what users of a cluster get: for every grid
cell of bench_em.py (``--dims``, ``--components``, the four covariance types, float64
and float32, the same rows and starting parameters), daskem's median seconds per EM
iteration (plain EM, ``iteration_seconds_``, iterations 2..) on

* the threaded scheduler (2 threads), and
* a LocalCluster of 2 worker processes x 1 thread (127.0.0.1), the data persisted on
  the workers,

alternating over ``--rounds`` rounds, and their ratio. The headline cell (full,
1,000,000 x 16, K=16) adds scikit-learn's per-iteration time, so that the 10x target
can be checked on worker processes.

Each cell also times a pass that does nothing (daskem's pass over the same persisted
chunks with a per-chunk function returning one zero) on both sides: the processes side's
extra cost of a pass as such (the round trip through the scheduler and the workers). The
"floor" column is the ratio the processes side would reach if its kernels ran exactly as
fast as on threads, (threaded + no-op processes - no-op threaded) / threaded: where it is
above the target, no faster kernel can meet it.

Usage::

    python benchmarks/bench_processes.py                      # about 10 minutes
    python benchmarks/bench_processes.py --dims 16 --components 8 --rounds 1
"""

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_em import grid_chunks, make_data, scaled_n, sklearn_per_iteration, starting_parameters  # noqa: E402


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def per_iteration(Xd, covariance_type, k, init, iters):
    from daskem import GaussianMixture

    gm = GaussianMixture(k, covariance_type=covariance_type, max_iter=iters, tol=0, random_state=0,
                         acceleration=None, cache=False, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(Xd)
    return list(gm.iteration_seconds_[1:])


def _nothing(block, ctx, row_start, sample_weight):
    return np.zeros(1)


def noop_pass_seconds(Xd, passes=12):
    """Median seconds of a pass over ``Xd`` through daskem's pass engine that computes nothing."""
    from daskem._passes import PassRequest, drive

    def steps():
        seconds = []
        for _ in range(passes + 1):
            t0 = time.perf_counter()
            yield PassRequest(_nothing, {}, 1)
            seconds.append(time.perf_counter() - t0)
        return seconds[1:]  # the first builds the pass's graph and finds the chunks' workers

    (seconds,) = drive(Xd, [steps()])
    return statistics.median(seconds)


def cells(args):
    out = [("full", 16, 16, "float64", args.n, True)]  # the headline case first
    for d in args.dims:
        for k in args.components:
            for cov in args.covariance_types:
                for dtype in args.dtypes:
                    out.append((cov, d, k, dtype, scaled_n(args, cov, d, k), False))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--dims", default="16")
    p.add_argument("--components", default="8,64")
    p.add_argument("--covariance-types", default="full,tied,diag,spherical")
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sklearn-iter", type=int, default=3)
    p.add_argument("--sklearn-budget", type=float, default=1.5)
    p.add_argument("--memory-limit", default="8GiB")
    p.add_argument("--out")
    args = p.parse_args(argv)
    args.dims = [int(x) for x in args.dims.split(",")]
    args.components = [int(x) for x in args.components.split(",")]
    args.covariance_types = args.covariance_types.split(",")
    args.dtypes = args.dtypes.split(",")
    args.quick = False

    import dask.array as da
    from distributed import Client, LocalCluster

    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=args.memory_limit,
                      dashboard_address=None, host="127.0.0.1") as cluster:
        for cov, d, k, dtype, n, headline in cells(args):
            X = make_data(n, d, k, np.float64, seed=7 if headline else d * 1000 + k)
            init = starting_parameters(X, cov, k)
            X = X.astype(dtype)
            chunks = args.chunks if headline else grid_chunks(args, n)
            local = da.from_array(X, chunks=(-(-n // chunks), d)).persist(scheduler="threads")
            threads, processes = [], []
            with Client(cluster) as client:
                remote = client.persist(da.from_array(X, chunks=(-(-n // chunks), d)))
                client.wait_for_workers(2)
                for r in range(args.rounds):
                    for kind in (("threads", "processes") if r % 2 == 0 else ("processes", "threads")):
                        if kind == "processes":
                            processes += per_iteration(remote, cov, k, init, args.iters)
                        else:
                            with _no_client(client):
                                threads += per_iteration(local, cov, k, init, args.iters)
                noop_processes = noop_pass_seconds(remote)
                with _no_client(client):
                    noop_threads = noop_pass_seconds(local)
                del remote
            row = dict(cov=cov, d=d, k=k, dtype=dtype, n=n, chunks=chunks, headline=headline,
                       threads=statistics.median(threads), processes=statistics.median(processes),
                       noop_threads=noop_threads, noop_processes=noop_processes)
            if headline:
                row["sklearn"] = sklearn_per_iteration(X, cov, k, init, args.sklearn_iter)["seconds"]
            rows.append(row)
            log(f"{cov} d={d} K={k} {dtype} N={n}: threads {row['threads']:.3f} s, processes "
                f"{row['processes']:.3f} s ({row['processes'] / row['threads']:.2f}x)")
    text = report(rows, args)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


class _no_client:
    """The threaded scheduler while a distributed client exists (its default is set aside)."""

    def __init__(self, client):
        self.client = client

    def __enter__(self):
        import dask

        self._config = dask.config.set(scheduler="threads")
        self._config.__enter__()

    def __exit__(self, *exc):
        self._config.__exit__(*exc)


def report(rows, args):
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.2f}. Seconds per EM iteration "
        f"(plain EM, median of iterations 2..{args.iters} over {args.rounds} alternating rounds; "
        "data persisted on each side; cache=False).\n",
        "| cov | d | K | dtype | N | chunks | threaded (2 threads) s | 2 worker processes x 1 thread s "
        "| processes / threaded | no-op pass, threaded / processes ms | floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["processes"] / r["threads"]
        floor = (r["threads"] + r["noop_processes"] - r["noop_threads"]) / r["threads"]
        lines.append(f"| {r['cov']} | {r['d']} | {r['k']} | {r['dtype']} | {r['n']:,} | {r['chunks']} | "
                     f"{r['threads']:.3f} | {r['processes']:.3f} | **{ratio:.2f}x** | "
                     f"{r['noop_threads'] * 1e3:.1f} / {r['noop_processes'] * 1e3:.1f} | {floor:.2f}x |")
    grid = [r for r in rows if not r["headline"]]
    if grid:
        worst = max(grid, key=lambda r: r["processes"] / r["threads"])
        lines.append(f"\nWorst grid cell: {worst['cov']} d={worst['d']} K={worst['k']} {worst['dtype']}, "
                     f"{worst['processes'] / worst['threads']:.2f}x (target: at most 1.2x).")
    for r in rows:
        if r["headline"]:
            lines.append(f"\nHeadline case (full, {r['n']:,} x 16, K=16, float64) on worker processes: "
                         f"scikit-learn {r['sklearn']:.3f} s per iteration, daskem {r['processes']:.3f} s: "
                         f"**{r['sklearn'] / r['processes']:.1f}x** (threaded: "
                         f"{r['sklearn'] / r['threads']:.1f}x; target 10x).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
