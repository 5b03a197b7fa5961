"""Peak worker memory of a streamed fit against the number of rows (issue 3).

For N = 1M, 2M, 4M, 8M rows x 16 float32 features, a Zarr store of a
Gaussian mixture is written (uncompressed, 16 MiB stored chunks, by the
threaded scheduler of this process). Then, for each N, on a fresh
``LocalCluster`` of 2 worker processes (1 thread each, 1 GiB memory limit):

1. a small warm-up fit, so that the workers have imported daskem (and with it
   scikit-learn, SciPy, pandas) and run every kernel once;
2. the workers' RSS "before" the fit;
3. ``GaussianMixture(cache=False, tol=0, max_iter=...)`` on
   ``daskem.io.read(store)``: the data are streamed from the store on every
   pass (initialisation and EM iterations), while a thread of this process
   polls each worker's RSS with psutil every 10 ms (the nanny's memory monitor
   polls every 100 ms); the peak over the fit is reported;
4. for contrast, the same fit with ``cache=True`` and ``max_iter=1``: the
   data are persisted in the workers' memory, so their peak grows with N.

Every fit runs on the same Dask chunks (16 MiB), so a streamed pass holds
the same amount of data at a time whatever N is: the streamed peak should
stay flat while the data grow 8 times.

Usage::

    python benchmarks/bench_memory.py --out benchmarks/MEMORY.md   # ~10 min on a busy 2-core machine
    python benchmarks/bench_memory.py --quick                       # smaller, seconds
"""

import argparse
import datetime
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings


def _pin_daskem():
    """Run on a copy of the daskem package taken now, not on the live checkout.

    Other work may edit daskem while this runs for minutes, and every fresh
    cluster's workers import it anew; a copy keeps one version throughout.
    The process re-executes itself once with the copy first on PYTHONPATH
    (worker processes inherit it). ``--no-pin`` uses the package as it is.
    """
    if "--no-pin" in sys.argv or os.environ.get("BENCH_MEMORY_PINNED"):
        return
    import importlib.util

    package = os.path.dirname(importlib.util.find_spec("daskem").origin)
    pinned = tempfile.mkdtemp(prefix="bench-memory-daskem-")
    shutil.copytree(package, os.path.join(pinned, "daskem"), ignore=shutil.ignore_patterns("__pycache__"))
    os.environ["BENCH_MEMORY_PINNED"] = pinned
    os.environ["BENCH_MEMORY_SOURCE"] = package
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [pinned, os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable] + sys.argv)


_pin_daskem()

import dask  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

import daskem  # noqa: E402
import daskem.demo  # noqa: E402
import daskem.io  # noqa: E402
from daskem import GaussianMixture  # noqa: E402

MiB = 2**20


def mixture_array(n_rows, n_features, n_components, chunk_rows, dtype, seed=0):
    """Lazy Dask array of mixture samples, each chunk drawn by its own generator."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-8.0, 8.0, size=(n_components, n_features))
    scales = rng.uniform(0.5, 1.5, size=(n_components, n_features))
    weights = rng.dirichlet(np.full(n_components, 20.0))
    return daskem.demo.mixture_array(n_rows, chunk_rows, means, scales, weights, seed, dtype)


class RSSPeaks:
    """Peak RSS of some local processes, polled from a background thread."""

    def __init__(self, pids, interval=0.01):
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = {pid: p.memory_info().rss for pid, p in self.procs.items()}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid, proc in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], proc.memory_info().rss)
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(path, args, warmup_path):
    """Fits on a fresh cluster; returns the measurements of one data size."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        memory_limit=args.worker_memory,
        host="127.0.0.1",
        dashboard_address=":0",
        processes=True,
    ) as cluster, Client(cluster) as client:
        addresses = sorted(client.scheduler_info()["workers"])
        pids = client.run(os.getpid)

        def fit(source, cache, max_iter):
            X = daskem.io.read(source, chunks=args.chunk_rows)
            gm = GaussianMixture(
                args.components, covariance_type=args.covariance, cache=cache,
                tol=0.0, max_iter=max_iter, random_state=0,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return gm.fit(X), X

        fit(warmup_path, False, 2)
        where = set(client.run(lambda: __import__("daskem").__file__).values())
        assert where == {daskem.__file__}, f"workers run daskem from {where}, not {daskem.__file__}"
        out = {}
        # cache=True only for its memory: one EM iteration is enough, the data
        # are persisted before the first pass
        for cache, max_iter in ((False, args.max_iter), (True, 1)):
            before = {a: psutil.Process(pids[a]).memory_info().rss for a in addresses}
            t = time.perf_counter()
            with RSSPeaks(pids.values()) as rss:
                gm, X = fit(path, cache, max_iter)
            seconds = time.perf_counter() - t
            out[cache] = {
                "before": max(before.values()),
                "peak": max(rss.peak.values()),
                "growth": max(rss.peak[pids[a]] - before[a] for a in addresses),
                "iteration": float(np.median(gm.iteration_seconds_)),
                "fit": seconds,
                "n_iter": gm.n_iter_,
            }
            # the persisted data are released before the next size's cluster
            del gm, X
        assert sorted(client.scheduler_info()["workers"]) == addresses, "a worker was restarted"
        assert client.run(os.getpid) == pids, "a worker was restarted"
        out["chunks"] = daskem.io.read(path, chunks=args.chunk_rows).numblocks[0]
    return out


def source_version():
    """Git commit of the daskem checkout and a hash of its sources as they are now.

    The hash tells whether daskem's files changed during the run (they are
    imported afresh by every cluster's workers).
    """
    package = os.path.dirname(os.path.abspath(daskem.__file__))
    checkout = os.environ.get("BENCH_MEMORY_SOURCE", package)
    digest = hashlib.sha1()
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    try:
        commit = subprocess.run(
            ["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", checkout, "status", "--porcelain", "--", "."],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        commit += " with uncommitted changes to daskem/" if dirty else ""
        if checkout != package:
            commit += " (a copy taken at the start of the run)"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown commit"
    return commit, digest.hexdigest()[:12]


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import distributed
    import zarr

    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"numpy {np.__version__}, dask {dask.__version__}, distributed {distributed.__version__}, "
        f"zarr {zarr.__version__}, daskem {daskem.__version__}"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=lambda s: [int(float(x)) for x in s.split(",")],
                   default=[1_000_000, 2_000_000, 4_000_000, 8_000_000])
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--covariance", default="full")
    p.add_argument("--max-iter", type=int, default=3)
    p.add_argument("--chunk-rows", type=int, default=262_144, help="rows per stored and Dask chunk")
    p.add_argument("--worker-memory", default="1GiB")
    p.add_argument("--dir", default=None, help="where to write the Zarr stores (a temporary directory)")
    p.add_argument("--quick", action="store_true", help="100k..400k rows, 2 iterations")
    p.add_argument("--out", default=None, help="write the markdown report here")
    p.add_argument("--no-pin", action="store_true",
                   help="import daskem from where it is installed instead of a copy taken at the start")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.max_iter, args.chunk_rows = [100_000, 200_000, 400_000], 2, 25_000

    dtype = np.float32
    root = tempfile.mkdtemp(prefix="bench-memory-", dir=args.dir)
    load = [os.getloadavg()[0]]
    started = datetime.datetime.now().astimezone()
    t0 = time.perf_counter()
    results = []
    versions = [source_version()]
    try:
        paths = {}
        with dask.config.set(scheduler="threads"):
            for n in [args.chunk_rows] + args.rows:
                paths[n] = os.path.join(root, f"rows-{n}.zarr")
                mixture_array(n, args.features, args.components, args.chunk_rows, dtype).to_zarr(
                    paths[n], compressors=None
                )
        print(f"wrote the stores in {time.perf_counter() - t0:.0f}s", flush=True)
        for n in args.rows:
            r = measure(paths[n], args, paths[args.chunk_rows])
            load.append(os.getloadavg()[0])
            versions.append(source_version())
            results.append((n, r))
            s, c = r[False], r[True]
            print(
                f"{n:>10,} rows: streamed {s['iteration']:.2f} s/iter, peak worker RSS "
                f"{s['peak'] / MiB:.0f} MiB (+{s['growth'] / MiB:.0f}); cache=True peak "
                f"{c['peak'] / MiB:.0f} MiB (+{c['growth'] / MiB:.0f})",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if os.environ.get("BENCH_MEMORY_PINNED"):
            shutil.rmtree(os.environ["BENCH_MEMORY_PINNED"], ignore_errors=True)
    total = time.perf_counter() - t0

    row_bytes = args.features * np.dtype(dtype).itemsize
    chunk_mib = args.chunk_rows * row_bytes / MiB
    lines = [
        "# Peak worker memory of a streamed fit (issue 3)",
        "",
        f"Measured {started:%Y-%m-%d %H:%M %Z} by `python benchmarks/bench_memory.py"
        f"{' --quick' if args.quick else ''}` ({total / 60:.1f} min in all).",
        "",
        f"Machine: {machine()}. Shared with other jobs during the run: load average "
        f"{min(load):.1f} to {max(load):.1f} (1 min), so seconds are noisy; memory is not.",
        "",
        f"daskem: {versions[0][0]}, sources {versions[0][1]}"
        + (" (unchanged during the run)." if len({v[1] for v in versions}) == 1 else
           f" at the start; CHANGED during the run: {', '.join(sorted({v[1] for v in versions[1:]}))}."),
        "",
        f"Data: Zarr, {args.features} float32 features, a {args.components}-component mixture, "
        f"uncompressed, stored and read in chunks of {args.chunk_rows:,} rows ({chunk_mib:.0f} MiB). "
        f"Fit: `GaussianMixture({args.components}, covariance_type='{args.covariance}', "
        f"tol=0, max_iter={args.max_iter})` (k-means|| initialisation) on "
        f"`daskem.io.read(store, chunks={args.chunk_rows})`, on a fresh LocalCluster of 2 worker "
        f"processes x 1 thread, memory limit {args.worker_memory} each, after a warm-up fit. "
        "Worker RSS is polled every 10 ms from the client machine (psutil) during the whole fit "
        "(initialisation passes included); *before* is the larger worker's RSS just before the "
        "fit (daskem, scikit-learn, SciPy, pandas already imported), *growth* the largest "
        "increase of one worker over its own *before*. Seconds per iteration: median of "
        "`iteration_seconds_` (one EM pass over the data each).",
        "",
        "| rows | data size | chunks | streamed (cache=False): s / EM iteration "
        "| s / iteration / 1M rows | fit s, streamed "
        "| worker RSS before | **peak worker RSS, streamed** | growth, streamed "
        "| peak worker RSS, cache=True | growth, cache=True |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in results:
        s, c = r[False], r[True]
        lines.append(
            f"| {n:,} | {n * row_bytes / MiB:,.0f} MiB | {r['chunks']} | {s['iteration']:.2f} "
            f"| {s['iteration'] / n * 1e6:.2f} | {s['fit']:.1f} | {s['before'] / MiB:.0f} MiB | **{s['peak'] / MiB:.0f} MiB** "
            f"| +{s['growth'] / MiB:.0f} MiB | {c['peak'] / MiB:.0f} MiB | +{c['growth'] / MiB:.0f} MiB |"
        )
    if len(results) >= 2:
        (n0, r0), (n1, r1) = results[0], results[-1]
        delta = r1[False]["peak"] - r0[False]["peak"]
        flat = delta < 0.1 * (n1 - n0) * row_bytes
        lines += [
            "",
            f"From {n0:,} to {n1:,} rows ({n1 / n0:.0f}x the data) the streamed peak worker RSS goes "
            f"from {r0[False]['peak'] / MiB:.0f} to {r1[False]['peak'] / MiB:.0f} MiB "
            f"({delta / MiB:+.0f} MiB, while the data grow by {(n1 - n0) * row_bytes / MiB:,.0f} MiB): "
            f"{'it does not grow with the number of rows' if flat else 'IT GROWS with the number of rows'}. "
            f"It is the worker process itself (~{r0[False]['before'] / MiB:.0f} MiB "
            f"with daskem imported) plus a few chunks in flight. With cache=True (same fit, "
            f"max_iter=1) the data are persisted on the workers, and the peak grows with them: "
            f"{r0[True]['peak'] / MiB:.0f} to {r1[True]['peak'] / MiB:.0f} MiB.",
        ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    sys.exit(main())
