"""Per-iteration speed of daskem's EM against scikit-learn and Spark MLlib (issue 6).

Everything is measured in one run, on the same data, on this machine:

* a float64 / float32 matrix-multiply peak (numpy, ~2000 x 2000, all BLAS threads);
* a grid: covariance type x d x K x dtype, scikit-learn and daskem per EM
  iteration from identical starting parameters (weights_init, means_init,
  precisions_init; tol=0, fixed max_iter), with daskem's achieved GFLOP/s
  and both libraries' peak memory; Spark MLlib (local[2], full covariance,
  float64) where pyspark and Java are available;
* the headline case (full, 1M x 16, K=16) with the targets of issue 6, the
  initialisation cost (the default coreset start, and k-means||), 1,000 vs 20
  chunks on the distributed scheduler, N vs 10 N rows, float32 vs float64
  speed and log-likelihood.

How each library's time per iteration is taken:

* daskem: the median of ``iteration_seconds_`` (each entry is one EM
  iteration: one pass over the data, the tree reduction and the M-step).
* scikit-learn: its own per-iteration clock (``verbose=2,
  verbose_interval=1`` prints the time of every iteration); the median over
  iterations 2..max_iter. The first is left out because scikit-learn starts
  its clock before its initialisation (with ``init_params='random'``: one
  M-step from random responsibilities, then the given parameters override
  it). This excludes initialisation and the final E-step that ``fit_predict``
  adds; dividing the wall time of ``fit`` by ``n_iter_`` would include them.
* Spark MLlib: (fit time with maxIter=m2 - fit time with maxIter=m1) / (m2 -
  m1), which removes start-up, caching and initialisation.

Usage::

    python benchmarks/bench_em.py --out benchmarks/RESULTS-raw.md   # ~10 min
    python benchmarks/bench_em.py --quick                           # seconds

Run it on an otherwise idle machine if you can; every ratio in the output
compares numbers measured in the same run.
"""

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

# ---------------------------------------------------------------- helpers


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else float("nan")


class PeakRSS:
    """Peak resident memory of this process above its level at entry (MiB)."""

    def __init__(self, interval=0.005):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self.peak_mib = float("nan")

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self):
        self._base = self._proc.memory_info().rss
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_mib = (self._peak - self._base) / 2**20
        return False


def machine_info():
    import dask
    import sklearn
    from threadpoolctl import threadpool_info

    import daskem

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        mem = "%.1f GiB" % (psutil.virtual_memory().total / 2**30)
    except ImportError:  # pragma: no cover
        mem = "unknown"
    blas = [
        "%s %s (%s, %d threads)"
        % (i.get("internal_api"), i.get("version"), i.get("architecture"), i.get("num_threads"))
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": "; ".join(blas) or "unknown",
        "scikit-learn": sklearn.__version__,
        "dask": dask.__version__,
        "daskem": getattr(daskem, "__version__", "?"),
        "load": "%.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else "n/a",
    }


def matmul_peak(dtype, size=2000, repeats=7):
    """GFLOP/s of numpy's matmul of two size x size matrices (all BLAS threads)."""
    rng = np.random.RandomState(0)
    a = rng.randn(size, size).astype(dtype)
    b = rng.randn(size, size).astype(dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2.0 * size**3 / min(times) / 1e9, 2.0 * size**3 / median(times) / 1e9


# ------------------------------------------------------------------- data


class Mixture:
    """A random mixture of k Gaussians in d dimensions to draw benchmark rows from."""

    def __init__(self, d, k, seed=0):
        rng = np.random.RandomState(seed)
        self.centres = rng.randn(k, d) * 3.0
        self.scales = rng.uniform(0.5, 1.5, size=(k, d))
        self.rotations = np.stack([np.linalg.qr(rng.randn(d, d))[0] for _ in range(min(k, 8))])

    def rows(self, n, seed, dtype=np.float64):
        rng = np.random.RandomState(seed)
        k = len(self.centres)
        lab = rng.randint(k, size=n)
        z = rng.randn(n, self.centres.shape[1]) * self.scales[lab]
        out = np.empty_like(z)
        for j, r in enumerate(self.rotations):
            sel = lab % len(self.rotations) == j
            out[sel] = z[sel] @ r
        out += self.centres[lab]
        return out.astype(dtype, copy=False)


def make_data(n, d, k, dtype, seed=0, block=1_000_000):
    """n rows from a mixture of k Gaussians in d dimensions (blocks to limit memory)."""
    mix = Mixture(d, k, seed)
    X = np.empty((n, d), dtype=dtype)
    for i, start in enumerate(range(0, n, block)):
        m = min(block, n - start)
        X[start : start + m] = mix.rows(m, seed * 7919 + i + 1)
    return X


def starting_parameters(X, covariance_type, k, seed=1):
    """Identical starting parameters for every library: random rows as means,
    equal weights, the data's per-feature precision."""
    rng = np.random.RandomState(seed)
    means = np.asarray(X[rng.choice(len(X), k, replace=False)], dtype=np.float64)
    var = np.var(np.asarray(X[: min(len(X), 100_000)], dtype=np.float64), axis=0)
    prec = 1.0 / var
    if covariance_type == "full":
        precisions = np.stack([np.diag(prec)] * k)
    elif covariance_type == "tied":
        precisions = np.diag(prec)
    elif covariance_type == "diag":
        precisions = np.tile(prec, (k, 1))
    else:
        precisions = np.full(k, float(np.mean(prec)))
    return dict(weights_init=np.full(k, 1.0 / k), means_init=means, precisions_init=precisions)


def gemm_flops(covariance_type, n, d, k):
    """Floating-point work of one daskem iteration: its two products per block
    (E-step W F and M-step R F^T, 2 K m flops per row each) plus tied's extras."""
    m = 1 + d + {"full": d * (d + 1) // 2, "tied": 0, "diag": d, "spherical": 1}[covariance_type]
    flops = 4.0 * n * k * m
    if covariance_type == "tied":
        flops += 4.0 * n * d * d
    return flops


# -------------------------------------------------------------- libraries


def sklearn_per_iteration(X, covariance_type, k, init, max_iter):
    """Seconds per EM iteration by scikit-learn's own per-iteration clock."""
    from sklearn.mixture import GaussianMixture as SkGM

    gm = SkGM(
        k, covariance_type=covariance_type, max_iter=max_iter, tol=0, init_params="random",
        random_state=0, verbose=2, verbose_interval=1, **init,
    )
    buf = io.StringIO()
    with PeakRSS() as mem, contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        gm.fit(X)
        wall = time.perf_counter() - t0
    lapses = {int(i): float(t) for i, t in re.findall(r"Iteration (\d+)\s+time lapse ([0-9.eE+-]+)s", buf.getvalue())}
    per_iter = [t for i, t in lapses.items() if i >= 2] or [wall / max(gm.n_iter_, 1)]
    return {
        "times": per_iter,
        "seconds": median(per_iter),
        "lower_bound": float(gm.lower_bound_),
        "lower_bounds": [float(v) for v in getattr(gm, "lower_bounds_", [])],
        "peak_mib": mem.peak_mib,
    }


def daskem_per_iteration(X, covariance_type, k, init, max_iter, n_chunks, repeats=1, dask_array=None):
    """daskem's iteration_seconds_ over ``repeats`` fits (median in "seconds")."""
    import dask.array as da

    from daskem import GaussianMixture

    if dask_array is None:
        rows = max(1, math.ceil(len(X) / n_chunks))
        dask_array = da.from_array(X, chunks=(rows, X.shape[1]))
    seconds, peaks = [], []
    for _ in range(repeats):
        gm = GaussianMixture(
            k, covariance_type=covariance_type, max_iter=max_iter, tol=0, random_state=0,
            acceleration=None, **init
        )
        with PeakRSS() as mem, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm.fit(dask_array)
        peaks.append(mem.peak_mib)
        seconds.extend(gm.iteration_seconds_)
    return {
        "times": seconds,
        "seconds": median(seconds),
        "lower_bound": float(gm.lower_bound_),
        "lower_bounds": [float(v) for v in gm.lower_bounds_],
        "peak_mib": max(peaks),
        "chunks": dask_array.numblocks[0],
    }


def _pooled(runs):
    """One library's fits of a cell: median over all their iterations, the
    largest memory peak, the first fit's lower bounds."""
    return {"seconds": median([t for run in runs for t in run["times"]]),
            "peak_mib": max(run["peak_mib"] for run in runs),
            "lower_bounds": runs[0]["lower_bounds"]}


def interleaved(X, covariance_type, k, init, args, n_chunks, rounds, daskem_iter=None):
    """scikit-learn and daskem fits alternating for ``rounds`` rounds (the
    machine is shared: both see the same conditions); medians over all of
    each library's iterations."""
    sk_runs, de_runs = [], []
    for r in range(rounds):
        steps = [
            lambda: sk_runs.append(sklearn_per_iteration(X, covariance_type, k, init, args.sklearn_iter)),
            lambda: de_runs.append(daskem_per_iteration(
                X, covariance_type, k, init, daskem_iter or args.daskem_iter, n_chunks)),
        ]
        for step in steps if r % 2 == 0 else steps[::-1]:
            step()
    sk, de = _pooled(sk_runs), _pooled(de_runs)
    de["chunks"] = de_runs[0]["chunks"]
    common = min(len(sk["lower_bounds"]), len(de["lower_bounds"]))
    a, b = np.array(sk["lower_bounds"][:common]), np.array(de["lower_bounds"][:common])
    agree = float(np.max(np.abs(a - b) / np.abs(a))) if common else float("nan")
    return sk, de, agree


class Spark:
    """A local[2] SparkSession and MLlib's GaussianMixture (full covariance)."""

    def __init__(self, tmpdir):
        from pyspark.sql import SparkSession

        self.tmpdir = tmpdir
        self.spark = (
            SparkSession.builder.master("local[2]")
            .appName("daskem-bench")
            .config("spark.driver.memory", "6g")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("ERROR")
        self.version = self.spark.version

    @staticmethod
    def available():
        try:
            import pyspark  # noqa: F401
        except ImportError:
            return False, "pyspark is not installed"
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            return False, "no Java runtime"
        return True, ""

    def frame(self, X):
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyspark.ml.feature import VectorAssembler

        path = os.path.join(self.tmpdir, "x%d_%d.parquet" % X.shape)
        if not os.path.exists(path):
            cols = ["f%d" % j for j in range(X.shape[1])]
            table = pa.table({c: np.ascontiguousarray(X[:, j], dtype=np.float64) for j, c in enumerate(cols)})
            pq.write_table(table, path, row_group_size=max(1, len(X) // 8))
        df = self.spark.read.parquet(path).repartition(2)
        df = VectorAssembler(inputCols=df.columns, outputCol="features").transform(df).select("features")
        df = df.cache()
        df.count()
        return df

    def per_iteration(self, X, k, iters=(2, 6)):
        from pyspark.ml.clustering import GaussianMixture as SparkGM

        df = self.frame(X)
        # a first fit pays for JIT compilation and caching; it is not timed
        SparkGM(k=k, maxIter=1, tol=0.0, seed=0, featuresCol="features").fit(df)
        times = {}
        for m in iters:
            t0 = time.perf_counter()
            SparkGM(k=k, maxIter=m, tol=0.0, seed=0, featuresCol="features").fit(df)
            times[m] = time.perf_counter() - t0
        df.unpersist()
        m1, m2 = iters
        return {"seconds": (times[m2] - times[m1]) / (m2 - m1), "fit_times": times}

    def stop(self):
        self.spark.stop()


# ---------------------------------------------------------------- sections


def grid_rows(args):
    """(covariance_type, d, K, dtype, n) for every grid cell."""
    rows = []
    for d in args.dims:
        for k in args.components:
            for cov in args.covariance_types:
                n = scaled_n(args, cov, d, k)
                for dtype in args.dtypes:
                    rows.append((cov, d, k, dtype, n))
    return rows


# scikit-learn's seconds per million rows and EM iteration on this kind of
# machine at d=16, K=8 (measured), scaled by K (d / 16)^e: only used to pick N
_SKLEARN_COST = {"full": (2.5, 1.5), "tied": (2.5, 1.5), "diag": (0.6, 0.5), "spherical": (0.6, 0.5)}


def scaled_n(args, covariance_type, d, k):
    """Rows for a grid cell: N at d=16, K=8; elsewhere reduced so that
    scikit-learn takes about ``--sklearn-budget`` seconds per iteration."""
    if args.quick or (d <= 16 and k <= 8):
        return args.n
    base, e = _SKLEARN_COST[covariance_type]
    per_million = base * (k / 8.0) * (d / 16.0) ** e
    n = min(args.n, args.sklearn_budget / per_million * 1e6)
    n = max(n, args.n / 40)
    step = 50_000 if n >= 100_000 else 5_000
    return int(max(step, n // step * step))


def grid_chunks(args, n):
    """daskem's chunks for n rows: --chunks, but at least ~50,000 rows each
    (and at least 4 chunks, for 2 threads)."""
    return max(min(args.chunks, n // 50_000), min(4, args.chunks))


def run_grid(args, spark, peaks):
    results = []
    data_cache = {}
    for cov, d, k, dtype, n in grid_rows(args):
        key = (n, d, k)
        if key not in data_cache:
            data_cache.clear()
            data_cache[key] = make_data(n, d, k, np.float64, seed=d * 1000 + k)
        X64 = data_cache[key]
        X = X64 if dtype == "float64" else X64.astype(np.float32)
        init = starting_parameters(X64, cov, k)
        log("grid: %s d=%d K=%d %s N=%d" % (cov, d, k, dtype, n))
        sk, de, agree = interleaved(X, cov, k, init, args, grid_chunks(args, n), args.rounds)
        row = {
            "covariance_type": cov, "d": d, "K": k, "dtype": dtype, "N": n, "chunks": de["chunks"],
            "sklearn_s": sk["seconds"], "daskem_s": de["seconds"],
            "ratio": sk["seconds"] / de["seconds"],
            "gflops": gemm_flops(cov, n, d, k) / de["seconds"] / 1e9,
            "peak_gflops": peaks[dtype],
            "sklearn_mib": sk["peak_mib"], "daskem_mib": de["peak_mib"],
            "data_mib": X.nbytes / 2**20,
            "ll_rel_diff": agree,
            "spark_s": None,
        }
        if spark is not None and cov == "full" and dtype == "float64" and args.spark_grid:
            log("  spark")
            row["spark_s"] = spark.per_iteration(X64, k, args.spark_grid_iters)["seconds"]
        results.append(row)
        log("  sklearn %.3f s  daskem %.3f s  ratio %.1f  lower bounds agree to %.1e"
            % (row["sklearn_s"], row["daskem_s"], row["ratio"], agree))
    return results


def run_headline(args, spark, peaks):
    """full, N x 16, K=16: the 10x / 4x targets, float32 vs float64."""
    n, d, k = args.n, args.headline_d, args.headline_k
    X64 = make_data(n, d, k, np.float64, seed=7)
    X32 = X64.astype(np.float32)
    init = starting_parameters(X64, "full", k)
    out = {"N": n, "d": d, "K": k}
    log("headline: full d=%d K=%d N=%d" % (d, k, n))
    sk, de64, agree = interleaved(X64, "full", k, init, args, args.chunks, args.rounds + 1)
    de32 = daskem_per_iteration(X32, "full", k, init, args.daskem_iter, args.chunks, args.rounds + 1)
    de64b = daskem_per_iteration(X64, "full", k, init, args.daskem_iter, args.chunks, 1)
    # float32 against the float64 fits on both sides of it in time
    de64["float32_ratio"] = median([median(de64b["times"]), de64["seconds"]]) / de32["seconds"]
    out["lower_bounds_agree"] = agree
    out.update(
        sklearn_s=sk["seconds"],
        daskem_s=de64["seconds"], daskem32_s=de32["seconds"],
        gflops=gemm_flops("full", n, d, k) / de64["seconds"] / 1e9,
        gflops32=gemm_flops("full", n, d, k) / de32["seconds"] / 1e9,
        daskem_mib=de64["peak_mib"], sklearn_mib=sk["peak_mib"],
        float32_ratio=de64["float32_ratio"],
    )
    # float32 against float64 after a longer fit from the same start
    log("headline: float32 vs float64 log-likelihood, %d iterations" % args.accuracy_iter)
    f64 = daskem_per_iteration(X64, "full", k, init, args.accuracy_iter, args.chunks)
    f32 = daskem_per_iteration(X32, "full", k, init, args.accuracy_iter, args.chunks)
    out["ll64"], out["ll32"] = f64["lower_bound"], f32["lower_bound"]
    out["ll_rel"] = abs(f32["lower_bound"] - f64["lower_bound"]) / abs(f64["lower_bound"])
    out["accuracy_iter"] = args.accuracy_iter
    if spark is not None:
        log("headline: spark")
        sp = spark.per_iteration(X64, k, args.spark_iters)
        out["spark_s"] = sp["seconds"]
        out["spark_fits"] = sp["fit_times"]
    else:
        out["spark_s"] = None
    # the default start (the coreset) and k-means||: max_iter=0 fits with and without them
    log("headline: initialisation")
    import dask.array as da

    from daskem import GaussianMixture

    Xd = da.from_array(X64, chunks=(math.ceil(n / args.chunks), d)).persist()
    timings = {"auto": [], "k-means||": [], "given": []}
    for rep in range(args.rounds + 1):
        for method, params in (("auto", {}), ("k-means||", {}), ("given", init)):
            start = "auto" if method == "given" else method
            gm = GaussianMixture(k, max_iter=0, init_params=start, random_state=rep, **params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                gm.fit(Xd)
                timings[method].append(time.perf_counter() - t0)
    out["validation_s"] = median(timings["given"])
    out["init_s"] = median(timings["auto"]) - out["validation_s"]
    out["kmeans_parallel_s"] = median(timings["k-means||"]) - out["validation_s"]
    # linearity: N and 10 N rows, same input chunk size, fits alternating
    if args.linearity:
        log("headline: %d rows against %d rows" % (10 * n, n))
        rows = math.ceil(n / args.chunks)
        Xbig = np.concatenate([make_data(n, d, k, np.float64, seed=7 + i) for i in range(10)])
        big_array = da.from_array(Xbig, chunks=(rows, d))
        small_times, big_times = [], []
        for _ in range(args.rounds):
            small_times += daskem_per_iteration(X64, "full", k, init, args.daskem_iter, args.chunks)["times"]
            big_times += daskem_per_iteration(
                None, "full", k, init, args.daskem_iter, None, dask_array=big_array
            )["times"]
        del Xbig, big_array
        out["n_small_s"], out["n_big_s"] = median(small_times), median(big_times)
    return out


def _mixture_chunk(mix, rows, block_id=None):
    return mix.rows(rows, seed=1000 + block_id[0])


def run_chunks(args):
    """1,000 chunks against 20 chunks of the same rows on the distributed scheduler.

    The rows are drawn on the worker, chunk by chunk (1,000 chunks), and
    persisted there; the 20-chunk array is a rechunk of the same persisted
    rows. A pass that does nothing but touch every chunk gives the
    scheduler's own cost per pass.
    """
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    from daskem import GaussianMixture

    d, k = args.headline_d, args.headline_k
    mix = Mixture(d, k, seed=11)
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(
            n_workers=1, threads_per_worker=os.cpu_count() or 2, processes=not args.quick,
            protocol="tcp://", host="127.0.0.1", dashboard_address=None,
        )
    try:
        with Client(cluster) as client:
            for n in args.chunks_n:
                log("chunks: %d rows" % n)
                rows = math.ceil(n / args.many_chunks)
                many = da.map_blocks(
                    _mixture_chunk, mix, rows, chunks=((rows,) * args.many_chunks, (d,)),
                    dtype=np.float64, meta=np.empty((0, 0)),
                )
                many = client.persist(many)
                wait(many)
                few = client.persist(many.rechunk({0: math.ceil(rows * args.many_chunks / args.few_chunks)}))
                wait(few)
                sample = np.asarray(many[: min(len(many), 100_000)].compute())
                init = starting_parameters(sample, "full", k)
                out = {"N": int(many.shape[0])}
                # the many small chunks, grouped into as many tasks as "few" inside
                # each pass's graph (not persisted): what evaluating several
                # chunks per task would cost
                grouped = many.rechunk({0: few.chunks[0]})
                variants = (("few", few, "auto"), ("many", many, "auto"),
                            ("streamed", many, False), ("grouped", grouped, "auto"))
                for label, X, cache in variants:
                    touch = da.map_blocks(lambda b: b[:1, :1], X, chunks=(1, 1)).sum()
                    trivial = []
                    for _ in range(3):
                        t0 = time.perf_counter()
                        touch.compute()
                        trivial.append(time.perf_counter() - t0)
                    times = []
                    reps = args.rounds if n <= 2_000_000 else 1
                    for _ in range(reps):
                        gm = GaussianMixture(
                            k, max_iter=args.daskem_iter, tol=0, random_state=0, cache=cache,
                            acceleration=None, **init
                        )
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            gm.fit(X)
                        times.extend(gm.iteration_seconds_)
                    out[label + "_s"] = median(times)
                    out[label + "_trivial_s"] = median(trivial)
                    out[label + "_chunks"] = X.numblocks[0]
                results.append(out)
                del many, few
                client.run(lambda: __import__("gc").collect())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster.close()
    return results


# ------------------------------------------------------------------ report


def fmt(x, digits=3):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    if 0 < abs(x) < 10.0**-digits:
        # two significant digits: a time under a millisecond (tiny --quick sizes) stays non-zero
        return "%.2g" % x
    return ("%." + str(digits) + "f") % x


def mib(x):
    if x is None or not np.isfinite(x):
        return "n/a"
    return "<1" if x < 1 else "%.0f" % x


def verdict(ok):
    return "**met**" if ok else "**not met**"


def targets(head, chunks, grid):
    rows = []
    r = head["sklearn_s"] / head["daskem_s"]
    rows.append(("full, %s x %d, K=%d: scikit-learn / daskem per iteration" % (f"{head['N']:,}", head["d"], head["K"]),
                 ">= 10x", "%.1fx (%s s vs %s s)" % (r, fmt(head["sklearn_s"]), fmt(head["daskem_s"])), verdict(r >= 10)))
    if head.get("spark_s"):
        r = head["spark_s"] / head["daskem_s"]
        rows.append(("same, Spark MLlib local[2] / daskem per iteration", ">= 4x",
                     "%.1fx (%s s vs %s s)" % (r, fmt(head["spark_s"]), fmt(head["daskem_s"])), verdict(r >= 4)))
    else:
        rows.append(("same, Spark MLlib local[2] / daskem per iteration", ">= 4x", "not measured", "n/a"))
    for cov in ("full", "tied", "diag", "spherical"):
        for d in sorted({g["d"] for g in grid}):
            cells = [g for g in grid if g["covariance_type"] == cov and g["d"] == d]
            if not cells:
                continue
            worst = min(cells, key=lambda g: g["ratio"])
            rows.append(("%s, d=%d: scikit-learn / daskem, worst of K x dtype" % (cov, d), ">= 5x",
                         "%.1fx (K=%d, %s)" % (worst["ratio"], worst["K"], worst["dtype"]),
                         verdict(worst["ratio"] >= 5)))
    r = head["float32_ratio"]
    rows.append(("float32 speed-up over float64 (headline case)", ">= 1.6x", "%.2fx" % r, verdict(r >= 1.6)))
    rows.append(("float32 fitted log-likelihood, relative to float64 (%d iterations)" % head["accuracy_iter"],
                 "<= 1e-4", "%.1e" % head["ll_rel"], verdict(head["ll_rel"] <= 1e-4)))
    r = head["init_s"] / head["daskem_s"]
    rows.append(("default initialisation (the coreset) / one EM iteration", "<= 3",
                 "%.2f (%s s)" % (r, fmt(head["init_s"])), verdict(r <= 3)))
    for c in chunks or []:
        r = c["many_s"] / c["few_s"]
        rows.append(("%d chunks / %d chunks per iteration (distributed, %s rows, %s rows per chunk)"
                     % (c["many_chunks"], c["few_chunks"], f"{c['N']:,}", f"{c['N'] // c['many_chunks']:,}"),
                     "<= 1.25x", "%.2fx (%s s vs %s s)" % (r, fmt(c["many_s"]), fmt(c["few_s"])),
                     verdict(r <= 1.25)))
    if head.get("n_big_s"):
        r = head["n_big_s"] / head["n_small_s"]
        rows.append(("10x rows / 1x rows per iteration", "<= 11x",
                     "%.2fx (%s s vs %s s)" % (r, fmt(head["n_big_s"]), fmt(head["n_small_s"])), verdict(r <= 11)))
    return rows


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(args, info, peaks, head, chunks, grid, spark_note):
    out = []
    out.append("# daskem EM benchmark (issue 6)\n")
    out.append("- date: %s" % info["date"])
    out.append("- machine: %s, %s cores, %s memory; load average at start %s"
               % (info["cpu"], info["cores"], info["memory"], info["load"]))
    out.append("- Python %s, numpy %s, BLAS: %s" % (info["python"], info["numpy"], info["blas"]))
    out.append("- scikit-learn %s, dask %s, daskem %s; Spark: %s"
               % (info["scikit-learn"], info["dask"], info["daskem"], spark_note))
    out.append("- command: `%s`" % " ".join(["python"] + [os.path.relpath(sys.argv[0])] + sys.argv[1:]))
    out.append("- daskem: threaded scheduler, %d chunks, BLAS 1 thread per task; scikit-learn: BLAS with all threads"
               % args.chunks)
    out.append("")
    out.append("## Matrix-multiply peak (numpy, %d x %d, all BLAS threads)\n" % (peaks["size"], peaks["size"]))
    out.append(table(["dtype", "best GFLOP/s", "median GFLOP/s"],
                     [[dt, fmt(peaks[dt]), fmt(peaks[dt + "_median"])] for dt in ("float64", "float32")]))
    out.append("")
    if head:
        out.append("## Targets\n")
        out.append(table(["target", "wanted", "measured", "verdict"], targets(head, chunks, grid)))
        out.append("")
        out.append("## Headline case: full covariance, %s x %d, K=%d\n" % (f"{head['N']:,}", head["d"], head["K"]))
        rows = [
            ["scikit-learn, float64", fmt(head["sklearn_s"]), "", mib(head["sklearn_mib"])],
            ["Spark MLlib local[2], float64", fmt(head.get("spark_s")), "", ""],
            ["daskem, float64", fmt(head["daskem_s"]), "%s (%.0f%% of peak)" % (fmt(head["gflops"]), 100 * head["gflops"] / peaks["float64"]), mib(head["daskem_mib"])],
            ["daskem, float32", fmt(head["daskem32_s"]), "%s (%.0f%% of peak)" % (fmt(head["gflops32"]), 100 * head["gflops32"] / peaks["float32"]), ""],
        ]
        out.append(table(["library", "s / iteration", "GFLOP/s", "peak extra MiB"], rows))
        out.append("")
        out.append("- float32 vs float64 after %d iterations from the same start: mean log-likelihood %.10g vs %.10g (relative difference %.1e)"
                   % (head["accuracy_iter"], head["ll32"], head["ll64"], head["ll_rel"]))
        out.append("- initialisation: the default (the coreset) %s s, k-means|| %s s; each fit(max_iter=0) minus fit(max_iter=0) with all initial parameters given (%s s: validation pass and persist)"
                   % (fmt(head["init_s"]), fmt(head.get("kmeans_parallel_s")), fmt(head["validation_s"])))
        if head.get("spark_fits"):
            out.append("- Spark fit times by maxIter (start-up, caching and initialisation included): %s"
                       % ", ".join("%d: %.1f s" % (m, t) for m, t in sorted(head["spark_fits"].items())))
        if head.get("n_big_s"):
            out.append("- linearity: %s rows %s s / iteration, %s rows %s s / iteration (same input chunks of %s rows; persisting merges them to 16 MiB, at least 16 chunks)"
                       % (f"{head['N']:,}", fmt(head["n_small_s"]), f"{10 * head['N']:,}", fmt(head["n_big_s"]),
                          f"{math.ceil(head['N'] / args.chunks):,}"))
        out.append("")
    if chunks:
        out.append("## Chunk count (distributed LocalCluster, 1 worker, %s threads, data persisted)\n"
                   % (os.cpu_count() or 2))
        out.append("'touch pass': a pass that only touches every chunk (the scheduler's own cost per pass). "
                   "'grouped': the 1,000 persisted chunks, merged into the few-chunk count by a rechunk "
                   "inside every pass's graph (not persisted), i.e. what evaluating several chunks per "
                   "task would cost. 'chunks' is the input's chunk count: a fit that persists its data (the "
                   "default when they fit in memory) first merges row chunks under 16 MiB, keeping at "
                   "least 16 chunks; 'streamed' (cache=False) runs one task per input chunk and pass.\n")
        rows = []
        for c in chunks:
            for label, what in (("few", ""), ("many", ""),
                                ("streamed", "%d, streamed (cache=False)" % c["many_chunks"]),
                                ("grouped", "%d, grouped into %d tasks per pass" % (c["many_chunks"], c["few_chunks"]))):
                if label + "_s" not in c:
                    continue
                rows.append([f"{c['N']:,}", what or c[label + "_chunks"],
                             f"{math.ceil(c['N'] / (c['many_chunks'] if label == 'grouped' else c[label + '_chunks'])):,}",
                             fmt(c[label + "_s"]), fmt(c[label + "_trivial_s"])])
        out.append(table(["rows", "chunks", "rows / chunk", "s / EM iteration", "s / touch pass"], rows))
        out.append("")
    if grid:
        out.append("## Grid: seconds per EM iteration, same data and starting parameters\n")
        out.append("N is reduced beyond d=16, K=8 so that scikit-learn takes about %.1f s per iteration "
                   "(column N); daskem's input chunks: %d, or fewer so that a chunk holds at least 50,000 "
                   "rows (column chunks; the fit splits persisted data in fewer than 16 chunks into 16). Times are medians over %d interleaved rounds of scikit-learn and "
                   "daskem fits. GFLOP/s counts daskem's two products per row block (4 N K m flops, "
                   "m = 1 + d(d+1)/2 + d (+ d/2) full, 1 + 2d diag, d + 2 spherical, 1 + d tied, plus "
                   "4 N d^2 for tied); %% is of the same dtype's matmul peak. Memory: peak resident "
                   "memory above the level before the fit (the data are already in memory). lower bounds: "
                   "largest relative difference between the two libraries' lower_bounds_, iteration by "
                   "iteration.\n" % (args.sklearn_budget, args.chunks, args.rounds))
        rows = []
        for g in grid:
            rows.append([
                g["covariance_type"], g["d"], g["K"], g["dtype"], f"{g['N']:,}", g["chunks"],
                fmt(g["sklearn_s"]), fmt(g["daskem_s"]), "%.1fx" % g["ratio"],
                fmt(g["spark_s"]), "%.1fx" % (g["spark_s"] / g["daskem_s"]) if g["spark_s"] else "",
                "%s (%.0f%%)" % (fmt(g["gflops"]), 100 * g["gflops"] / g["peak_gflops"]),
                mib(g["sklearn_mib"]), mib(g["daskem_mib"]), mib(g["data_mib"]),
                "%.0e" % g["ll_rel_diff"],
            ])
        out.append(table(["cov", "d", "K", "dtype", "N", "chunks", "sklearn s", "daskem s", "sklearn/daskem",
                          "spark s", "spark/daskem", "daskem GFLOP/s", "sklearn MiB", "daskem MiB",
                          "data MiB", "lower bounds"], rows))
        out.append("")
    return "\n".join(out)


# -------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for tests (seconds)")
    p.add_argument("--out", help="write the markdown report here (also printed)")
    p.add_argument("--json", help="write the raw numbers here")
    p.add_argument("--n", type=int, default=None, help="rows (default 1,000,000)")
    p.add_argument("--chunks", type=int, default=None, help="row chunks for daskem (default 20)")
    p.add_argument("--covariance-types", default="full,tied,diag,spherical")
    p.add_argument("--dims", default=None, help="default 16,64")
    p.add_argument("--components", default=None, help="default 8,64")
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--sklearn-iter", type=int, default=3, help="scikit-learn max_iter (median of iterations 2..)")
    p.add_argument("--daskem-iter", type=int, default=4)
    p.add_argument("--accuracy-iter", type=int, default=None, help="iterations of the float32/float64 comparison")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved scikit-learn / daskem fits per grid cell (headline: one more)")
    p.add_argument("--sklearn-budget", type=float, default=1.5,
                   help="seconds per scikit-learn iteration the grid's N is scaled to (beyond d=16, K=8)")
    p.add_argument("--spark", choices=["auto", "yes", "no"], default="auto")
    p.add_argument("--spark-grid", action=argparse.BooleanOptionalAction, default=True,
                   help="Spark on the grid's full/float64 cells too")
    p.add_argument("--spark-iters", default="2,6", help="maxIter pair m1,m2 (headline case)")
    p.add_argument("--spark-grid-iters", default="1,3", help="maxIter pair m1,m2 (grid cells)")
    p.add_argument("--sections", default="headline,chunks,grid")
    p.add_argument("--chunks-n", default=None, help="rows of the chunk-count test (comma list; default 1000000,10000000)")
    p.add_argument("--many-chunks", type=int, default=1000)
    p.add_argument("--few-chunks", type=int, default=20)
    p.add_argument("--linearity", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    q = args.quick
    args.n = args.n or (3000 if q else 1_000_000)
    args.chunks = args.chunks or (4 if q else 20)
    args.dims = [int(x) for x in (args.dims or ("3" if q else "16,64")).split(",")]
    args.components = [int(x) for x in (args.components or ("2" if q else "8,64")).split(",")]
    args.covariance_types = args.covariance_types.split(",")
    args.dtypes = args.dtypes.split(",")
    args.accuracy_iter = args.accuracy_iter or (5 if q else 20)
    args.rounds = args.rounds or (1 if q else 2)
    args.spark_iters = tuple(int(x) for x in args.spark_iters.split(","))
    args.spark_grid_iters = tuple(int(x) for x in args.spark_grid_iters.split(","))
    args.sections = set(args.sections.split(","))
    args.chunks_n = [int(x) for x in (args.chunks_n or ("3000" if q else "1000000,10000000")).split(",")]
    if q:
        args.sklearn_iter, args.daskem_iter = 3, 3
        args.many_chunks, args.few_chunks = min(args.many_chunks, 30), min(args.few_chunks, 3)
        if args.spark == "auto":
            args.spark = "no"
    args.headline_d, args.headline_k = (3, 2) if q else (16, 16)
    return args


def main(argv=None):
    args = parse_args(argv)
    info = machine_info()
    log("machine:", info)
    peaks = {"size": 300 if args.quick else 2000}
    for dt in ("float64", "float32"):
        best, med = matmul_peak(np.dtype(dt), size=peaks["size"], repeats=3 if args.quick else 7)
        peaks[dt], peaks[dt + "_median"] = best, med
    log("peaks:", peaks)
    spark, spark_note = None, "not run"
    tmpdir = tempfile.mkdtemp(prefix="daskem-bench-")
    try:
        if args.spark != "no":
            ok, why = Spark.available()
            if ok:
                try:
                    spark = Spark(tmpdir)
                    spark_note = "pyspark %s, local[2]" % spark.version
                except Exception as exc:  # noqa: BLE001 - reported, not fatal
                    spark_note = "failed to start (%s)" % str(exc).splitlines()[0][:120]
                    if args.spark == "yes":
                        raise
            else:
                spark_note = "not run: " + why
                if args.spark == "yes":
                    raise SystemExit("Spark requested but " + why)
        head = run_headline(args, spark, peaks) if "headline" in args.sections else None
        grid = run_grid(args, spark, peaks) if "grid" in args.sections else []
        if spark is not None:
            spark.stop()
            spark = None
        chunks = run_chunks(args) if "chunks" in args.sections else None
    finally:
        if spark is not None:
            spark.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)
    text = report(args, info, peaks, head, chunks, grid, spark_note)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.json:
        for g in grid:
            g.pop("model", None)
        with open(args.json, "w") as f:
            json.dump({"machine": info, "peaks": peaks, "headline": head, "chunks": chunks, "grid": grid},
                      f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
