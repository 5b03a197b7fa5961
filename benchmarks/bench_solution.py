"""Time to solution: whole fits, daskem against scikit-learn and Spark MLlib (issue 18).

Users wait for whole fits, not iterations. Every library runs with its defaults except
tol=1e-4 on the mean log-likelihood (Spark's tol applies to the total, so it gets
1e-4 * n) and n_init=1, on overlapping clusters:

* the slowly converging case, 400,000 x 8, K=16, and 1,000,000 x 16, K=16 (``--cases``);
* the four covariance types (``--covariance-types``), float64 and float32 (``--dtypes``);
* three seeds (``--seeds``); medians are reported.

Measured per fit: wall time (initialisation included), EM iterations, passes over the
data (daskem's ``n_passes_``; scikit-learn and Spark make one pass per iteration plus
their initialisation's), and the final mean log-likelihood ``score(X)`` (for Spark, the
per-row mean of its summary's log-likelihood). daskem runs plain EM (``acceleration=None``)
and SQUAREM, on the threaded scheduler and on a LocalCluster of 2 worker processes x 1
thread (``--schedulers``; the data persisted on the workers before the fits are timed), with
fixed row chunks (20) and a fixed memory limit.

Also: ``init_params='kmeans'`` against scikit-learn's k-means initialisation (the time of
``max_iter=0`` fits).

Usage::

    python benchmarks/bench_solution.py --out /tmp/solution.md          # about 40 minutes
    python benchmarks/bench_solution.py --cases slow --covariance-types full,diag \\
        --dtypes float64 --seeds 0 --schedulers threads                 # minutes
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_em import Mixture, Spark  # noqa: E402

CASES = {"slow": (400_000, 8, 16), "big": (1_000_000, 16, 16)}
CHUNKS = 20
TOL = 1e-4
# the clusters overlap: centres closer than bench_em.py's
OVERLAP = 0.5


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def overlapping_data(n, d, k, dtype, seed=0):
    mix = Mixture(d, k, seed=3)
    mix.centres *= OVERLAP
    return mix.rows(n, seed + 1, dtype=dtype)


def sklearn_fit(X, covariance_type, k, seed, max_iter=100, init_only=False):
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(k, covariance_type=covariance_type, tol=TOL, random_state=seed,
                         max_iter=0 if init_only else max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        gm.fit(X)
        wall = time.perf_counter() - t0
    return {"seconds": wall, "n_iter": gm.n_iter_, "passes": gm.n_iter_ + 1,
            "score": float(gm.score(X)), "converged": bool(gm.converged_)}


def cold_start():
    """Forget the k-means results daskem keeps for later fits.

    daskem keeps the centres of its last in-memory k-means runs (keyed by the rows, K and
    the seed) so that the candidates of a ``select_model`` grid cluster their common coreset
    once. Every fit here with a seed already used (SQUAREM after plain EM, processes after
    threads, ``init_params='kmeans'`` after the default start) would otherwise skip that
    k-means and look 0.1-0.3 s faster than a user's first fit.
    """
    from daskem import _initialization

    _initialization._SAMPLE_KMEANS_CACHE.clear()


def daskem_fit(Xd, X, covariance_type, k, seed, acceleration, init_params="auto", max_iter=100):
    from daskem import GaussianMixture

    cold_start()
    gm = GaussianMixture(k, covariance_type=covariance_type, tol=TOL, random_state=seed,
                         acceleration=acceleration, init_params=init_params, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        gm.fit(Xd)
        wall = time.perf_counter() - t0
    return {"seconds": wall, "n_iter": gm.n_iter_, "passes": gm.n_passes_,
            "score": float(gm.score(X)), "converged": bool(gm.converged_),
            "per_iteration": statistics.median(gm.iteration_seconds_) if gm.iteration_seconds_ else 0.0}


def spark_fit(spark, X, k, seed):
    from pyspark.ml.clustering import GaussianMixture as SparkGM

    df = spark.frame(X)
    t0 = time.perf_counter()
    model = SparkGM(k=k, tol=TOL * len(X), seed=seed, featuresCol="features").fit(df)
    wall = time.perf_counter() - t0
    summary = model.summary
    n_iter = int(summary.numIter)
    df.unpersist()
    return {"seconds": wall, "n_iter": n_iter, "passes": n_iter + 1,
            "score": float(summary.logLikelihood) / len(X), "converged": n_iter < 100}


@contextlib.contextmanager
def scheduler(kind, memory_limit):
    if kind == "threads":
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    # "processes": distributed's defaults (a user's own LocalCluster); "processes-unprofiled":
    # without the workers' statistical profiler, as `daskem fit --no-dashboard` starts them
    profile = {"distributed.worker.profile.enabled": kind == "processes"}
    with dask.config.set(profile):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                               dashboard_address=None, host="127.0.0.1")
    with cluster, Client(cluster) as client:
        yield client


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def summarise(name, runs):
    return {
        "library": name,
        "seconds": median_of(runs, "seconds"),
        "n_iter": median_of(runs, "n_iter"),
        "passes": median_of(runs, "passes"),
        "score": median_of(runs, "score"),
        "converged": sum(r["converged"] for r in runs),
        "runs": len(runs),
        "per_iteration": median_of(runs, "per_iteration") if "per_iteration" in runs[0] else None,
    }


def run_case(case, covariance_type, dtype, args, spark):
    import dask.array as da

    n, d, k = CASES[case]
    X = overlapping_data(n, d, k, dtype)
    rows = []
    sk = [sklearn_fit(X, covariance_type, k, seed) for seed in args.seeds]
    rows.append(summarise("scikit-learn", sk))
    log(f"  scikit-learn: {rows[-1]['seconds']:.1f} s")
    if spark is not None and covariance_type == "full" and dtype == "float64":
        sp = [spark_fit(spark, X, k, seed) for seed in args.seeds]
        rows.append(summarise("Spark MLlib", sp))
        log(f"  Spark: {rows[-1]['seconds']:.1f} s")
    for kind in args.schedulers:
        with scheduler(kind, args.memory_limit) as client:
            Xd = da.from_array(X, chunks=(-(-n // CHUNKS), d))
            if client is not None:
                # the data in the workers' memory before the clock starts, as data read by
                # the workers themselves would be (not shipped from this process by every fit)
                from distributed import wait

                Xd = client.persist(Xd)
                wait(Xd)
            for acceleration in (None, "squarem"):
                runs = [daskem_fit(Xd, X, covariance_type, k, seed, acceleration) for seed in args.seeds]
                label = f"daskem {'SQUAREM' if acceleration else 'plain EM'} ({kind})"
                rows.append(summarise(label, runs))
                log(f"  {label}: {rows[-1]['seconds']:.1f} s")
    return rows


def kmeans_init(args):
    import dask.array as da

    out = []
    for case in args.cases:
        n, d, k = CASES[case]
        X = overlapping_data(n, d, k, "float64")
        Xd = da.from_array(X, chunks=(-(-n // CHUNKS), d))
        sk = [sklearn_fit(X, "diag", k, seed, init_only=True)["seconds"] for seed in args.seeds]
        de = [daskem_fit(Xd, X, "diag", k, seed, None, init_params="kmeans", max_iter=0)["seconds"]
              for seed in args.seeds]
        out.append((case, n, d, k, statistics.median(sk), statistics.median(de)))
    return out


def report(results, inits, args, spark_note):
    lines = [f"Time to solution, {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.2f}; "
             f"tol={TOL} on the mean log-likelihood, n_init=1, defaults otherwise; medians of "
             f"{len(args.seeds)} seed(s); {spark_note}.", ""]
    for (case, cov, dtype), rows in results.items():
        n, d, k = CASES[case]
        sk = rows[0]
        lines += [f"**{n:,} x {d}, K={k}, {cov}, {dtype}**", "",
                  "| fit | wall (s) | against scikit-learn | EM iterations | passes | final mean "
                  "log-likelihood | minus scikit-learn's | converged |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['library']} | {r['seconds']:.2f} | {sk['seconds'] / r['seconds']:.1f}x | "
                f"{r['n_iter']:.0f} | {r['passes']:.0f} | {r['score']:.6f} | "
                f"{r['score'] - sk['score']:+.1e} | "
                f"{r['converged']}/{r['runs']} |")
        lines.append("")
    if inits:
        lines += ["**init_params='kmeans' against scikit-learn's k-means initialisation** (diag, "
                  "max_iter=0)", "", "| data | scikit-learn (s) | daskem (s) | ratio |", "|---|---|---|---|"]
        for _case, n, d, k, s, t in inits:
            lines.append(f"| {n:,} x {d}, K={k} | {s:.2f} | {t:.2f} | {s / t:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="slow,big")
    p.add_argument("--covariance-types", default="full,tied,diag,spherical")
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--schedulers", default="threads,processes",
                   help="threads, processes (2 worker processes x 1 thread, distributed's defaults), "
                        "processes-unprofiled (the same without the workers' profiler)")
    p.add_argument("--memory-limit", default="8GiB", help="per worker process")
    p.add_argument("--spark", choices=["auto", "yes", "no"], default="auto")
    p.add_argument("--no-init", action="store_true", help="skip the k-means initialisation section")
    p.add_argument("--out")
    args = p.parse_args(argv)
    args.cases = args.cases.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.schedulers = args.schedulers.split(",")
    unknown = set(args.schedulers) - {"threads", "processes", "processes-unprofiled"}
    if unknown:
        p.error(f"unknown --schedulers {sorted(unknown)}")
    spark, spark_note = None, "Spark MLlib not run"
    if args.spark != "no":
        ok, why = Spark.available()
        if ok:
            import tempfile

            spark = Spark(tempfile.mkdtemp(prefix="daskem-spark-"))
            spark_note = f"Spark MLlib {spark.version} local[2], full covariance, float64"
        elif args.spark == "yes":
            raise SystemExit(f"Spark requested but {why}")
        else:
            spark_note = f"Spark MLlib not run ({why})"
    results = {}
    try:
        for case in args.cases:
            for cov in args.covariance_types.split(","):
                for dtype in args.dtypes.split(","):
                    log(f"{case} {cov} {dtype}")
                    results[(case, cov, dtype)] = run_case(case, cov, dtype, args, spark)
    finally:
        if spark is not None:
            spark.stop()
    inits = [] if args.no_init else kmeans_init(args)
    text = report(results, inits, args, spark_note)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
