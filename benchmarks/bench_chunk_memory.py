"""Peak worker memory of one pass against the chunk size and the worker memory limit (issue 19).

A Zarr store of float64 rows (16 features, a 4-component mixture, uncompressed,
stored in chunks of 1 MiB) is written once. Then, for each worker setup
(memory limit x threads per worker, 2 worker processes, a fresh
``LocalCluster`` each), after a warm-up (every pass below once, on small
chunks, so that the workers have imported what they need), and for each
Dask chunk size (``daskem.io.read(store, chunk_bytes=...)``, whole stored
chunks), three passes over the data are timed and their peak worker memory
measured:

* **validation**: the fit's validation pass (``daskem._validation.data_summary``:
  finiteness and column sums), as every fit makes first;
* **statistics**: one EM pass (the E-step and sufficient statistics of a
  full-covariance, 4-component model, ``daskem._passes.drive``), as every
  iteration makes;
* **prediction**: ``daskem.io.write_zarr(gm.predict_proba(X), ...)``, the
  probabilities of every row written to a Zarr store (``daskem predict --proba``).

Worker RSS is polled every 5 ms (psutil, from this process) during each pass;
the table gives each pass's peak (the larger worker) and its growth over the
RSS just before the pass (the worker process itself, about 190 MiB). Spilling,
pausing and the target are off so that they do not hide or stall anything; the
nanny's terminate threshold (95%) stays on, and a pass that restarted a worker
is marked *restarted*. The bold cell of each setup is the chunk size that
read()'s rule picks for it (``daskem.io.auto_chunk_bytes``).

Usage::

    python benchmarks/bench_chunk_memory.py --out /tmp/chunk-memory.md   # about 5 minutes on 2 cores
    python benchmarks/bench_chunk_memory.py --quick                      # seconds
"""

import argparse
import ctypes
import datetime
import gc
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import warnings

import dask
import numpy as np
import psutil
from distributed import Client, LocalCluster

# Only modules a worker would load anyway: worker processes are spawned, so they import
# this module again, and scikit-learn (imported in main()) would add 40 MiB to each.
import daskem
import daskem.demo
import daskem.io
from daskem._passes import drive
from daskem._validation import data_summary

MiB = 2**20
# the nanny's terminate threshold stays; the others would hide or stall what is measured
MEMORY_CONFIG = {
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": False,
    "distributed.worker.memory.terminate": 0.95,
    # a pass whose restarted workers do not come back fails after 30 s instead of 300
    "daskem.no-workers-timeout": 30,
}


class RSSPeaks:
    """Peak RSS of some local processes, polled from a background thread."""

    def __init__(self, pids, interval=0.005):
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = dict.fromkeys(self.procs, 0)
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


def _trim():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def write_store(path, n_rows, n_features, stored_rows):
    rng = np.random.default_rng(0)
    means = rng.uniform(-6, 6, size=(4, n_features))
    scales = rng.uniform(0.5, 1.5, size=(4, n_features))
    weights = rng.dirichlet(np.full(4, 20.0))
    with dask.config.set(scheduler="threads"):
        daskem.demo.mixture_array(n_rows, stored_rows, means, scales, weights, seed=1).to_zarr(
            path, compressors=None
        )


def statistics_pass(gm, X, shift):
    from daskem._engine import fitted_parameters
    from daskem._registry import family_of

    family = family_of(gm)
    request, _ = family.statistics_request(fitted_parameters(gm, family), shift, X.dtype)

    def steps():
        return (yield request)

    drive(X, [steps()])


def measure_setup(store, out_dir, memory_limit, threads, chunk_sizes, gm, shift):
    """Every chunk size on one worker setup; a fresh cluster after a pass restarted a worker."""
    from dask.utils import parse_bytes

    rows, rule = {}, None
    sizes = list(chunk_sizes)
    while sizes:
        with dask.config.set(MEMORY_CONFIG), LocalCluster(
            n_workers=2, threads_per_worker=threads, memory_limit=memory_limit, host="127.0.0.1",
            dashboard_address=":0", processes=True,
        ) as cluster, Client(cluster) as client:
            rule, _ = daskem.io.auto_chunk_bytes(client)
            # warm-up: every pass once on small chunks
            small = daskem.io.read(store, chunk_bytes=min(chunk_sizes))
            for run in _passes(gm, shift, small, out_dir).values():
                run()
            while sizes:
                size = sizes.pop(0)
                if size > parse_bytes(memory_limit) / 4:
                    continue  # not run: workers restart over and over
                restarted = False
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the ChunkSizeWarning of chunks too large
                    X = daskem.io.read(store, chunk_bytes=size)
                for name, run in _passes(gm, shift, X, out_dir).items():
                    rows[size, name] = _measure(client, run, X)
                    r = rows[size, name]
                    print(f"{memory_limit} x {threads} thread(s), chunks {size // MiB} MiB, {name}: peak "
                          f"{r['peak'] / MiB:.0f} MiB (+{r['growth'] / MiB:.0f}), {r['seconds']:.1f} s"
                          f"{' RESTARTED' if r['restarted'] else ''}{' ' + r['error'] if r['error'] else ''}",
                          flush=True)
                    restarted |= r["restarted"]
                if restarted:
                    break  # the next size on a fresh cluster
    return rule, rows


def _passes(gm, shift, X, out_dir):
    target = os.path.join(out_dir, "proba.zarr")
    return {
        "validation": lambda: data_summary(X),
        "statistics": lambda: statistics_pass(gm, X, shift),
        "prediction": lambda: daskem.io.write_zarr(gm.predict_proba(X), target, overwrite=True),
    }


def _measure(client, run, X):
    client.run(_trim)
    pids = client.run(os.getpid)
    before = {a: psutil.Process(p).memory_info().rss for a, p in pids.items()}
    error = None
    t = time.perf_counter()
    with RSSPeaks(pids.values()) as rss, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            run()
        except Exception as e:  # noqa: BLE001 - reported in the table
            error = type(e).__name__
    seconds = time.perf_counter() - t
    try:
        client.wait_for_workers(2, timeout=30)
        restarted = client.run(os.getpid) != pids
    except Exception:  # noqa: BLE001 - a worker that does not come back
        restarted = True
    return {
        "before": max(before.values()),
        "peak": max(rss.peak.values()),
        "growth": max(rss.peak[p] - before[a] for a, p in pids.items()),
        "seconds": seconds,
        "restarted": restarted,
        "error": error,
        "chunk": X.chunksize[0] * X.shape[1] * X.dtype.itemsize,
    }


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
        f"Python {platform.python_version()}, numpy {np.__version__}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}, zarr {zarr.__version__}, daskem {daskem.__version__}"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4_194_304, help="rows of 16 float64 (512 MiB)")
    p.add_argument("--setups", default="256MiB:1,512MiB:1,1GiB:1,1GiB:2",
                   help="memory limit:threads per worker, comma-separated")
    p.add_argument("--chunks-mib", default="1,2,4,8,16,32,64,128")
    p.add_argument("--quick", action="store_true", help="64 MiB of data, two setups, three sizes")
    p.add_argument("--out", default=None, help="write the markdown report here")
    args = p.parse_args(argv)
    from daskem import GaussianMixture

    if args.quick:
        args.rows, args.setups, args.chunks_mib = 524_288, "256MiB:1,1GiB:1", "1,4,16"
    n_features, stored_rows = 16, MiB // (16 * 8)
    setups = [(s.split(":")[0], int(s.split(":")[1])) for s in args.setups.split(",")]
    sizes = [int(c) * MiB for c in args.chunks_mib.split(",")]

    root = tempfile.mkdtemp(prefix="bench-chunk-memory-")
    started = datetime.datetime.now().astimezone()
    t0 = time.perf_counter()
    load = [os.getloadavg()[0]]
    results = {}
    try:
        store = os.path.join(root, "data.zarr")
        write_store(store, args.rows, n_features, stored_rows)
        sample = daskem.io.read(store)[:200_000].compute()
        gm = GaussianMixture(4, covariance_type="full", random_state=0, max_iter=20).fit(sample)
        shift = sample.mean(axis=0)
        for memory_limit, threads in setups:
            results[memory_limit, threads] = measure_setup(
                store, root, memory_limit, threads, sizes, gm, shift)
            load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - t0

    data_mib = args.rows * n_features * 8 / MiB
    lines = [
        "## Peak worker memory of one pass against chunk size and worker memory limit (issue 19)",
        "",
        f"Measured {started:%Y-%m-%d %H:%M %Z} by `python benchmarks/bench_chunk_memory.py"
        f"{' --quick' if args.quick else ''}` ({total / 60:.1f} min in all). Machine: {machine()}; "
        f"load average {min(load):.1f} to {max(load):.1f}.",
        "",
        f"Data: Zarr, {args.rows:,} rows x {n_features} float64 ({data_mib:,.0f} MiB), uncompressed, "
        "stored in chunks of 1 MiB; Dask chunks of the sizes below (`read(store, chunk_bytes=...)`). "
        "2 worker processes per setup; spilling, pausing and the memory target off, the nanny's "
        "terminate threshold (95%) on. Each cell: the peak RSS of the larger worker during the "
        "pass, and its growth over the RSS just before it (the worker process: about 190 MiB). "
        "**Bold**: the chunk size read()'s rule picks for that setup (1/32 of the memory limit per "
        "thread, between 1 and 128 MiB).",
        "",
    ]
    passes = ("validation", "statistics", "prediction")
    for (limit, threads), (rule, rows) in results.items():
        lines += [f"### {limit} per worker, {threads} thread(s) per worker (rule: {rule / MiB:g} MiB chunks)",
                  "", "| chunk | " + " | ".join(f"{n}: peak (growth), s" for n in passes) + " |",
                  "|---:|" + "---:|" * len(passes)]
        for size in sizes:
            cells = []
            if (size, passes[0]) not in rows:
                lines.append(f"| {size / MiB:g} MiB | " + " | ".join(["not run (over 1/4 of the limit)"] * 3)
                             + " |")
                continue
            for name in passes:
                r = rows[size, name]
                cell = f"{r['peak'] / MiB:.0f} MiB (+{r['growth'] / MiB:.0f}), {r['seconds']:.1f} s"
                if r["restarted"]:
                    cell += ", **restarted**"
                if r["error"]:
                    cell += f", failed: {r['error']}"
                cells.append(cell)
            label = f"{size / MiB:g} MiB"
            lines.append(f"| {'**' + label + '**' if size == rule else label} | " + " | ".join(cells) + " |")
        lines.append("")
    # the growth per thread and chunk: the documented multiple
    ratios = {name: max(rows[size, name]["growth"] / (rows[size, name]["chunk"] * threads)
                        for (_, threads), (_, rows) in results.items() for size in sizes
                        if size >= 8 * MiB and (size, name) in rows and not rows[size, name]["restarted"])
              for name in passes}
    lines += [
        "Largest growth of a worker over its chunk size times its threads, chunks of 8 MiB or more "
        "(smaller ones are dominated by fixed row blocks and allocator noise), the chunk read "
        "ahead included: " + ", ".join(f"{name} {ratio:.1f}x" for name, ratio in ratios.items()) + ".",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    sys.exit(main())
