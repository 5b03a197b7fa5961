"""Benchmarks of issue 7: a model-selection grid in shared passes, and online EM.

1. A grid of candidates (n_components x covariance types) fitted by
   ``select_model`` on Zarr data, against the same candidates fitted one by
   one: wall time and bytes read from the store.
2. Online EM on N rows: the mean log-likelihood after 1 and 2 passes against
   batch EM's final one, and the passes batch EM needs.

Usage: python benchmarks/bench_beyond.py [--quick] [--out FILE.md]
"""

import argparse
import platform
import tempfile
import threading
import time
import warnings

import dask
import dask.array as da
import numpy as np
from sklearn.exceptions import ConvergenceWarning

import daskem
import daskem.io
from daskem import GaussianMixture, select_model


class ReadCounter:
    """Wraps a Dask array so that every chunk read adds its bytes to a total."""

    def __init__(self, X):
        self.bytes = 0
        self.lock = threading.Lock()
        self.array = X.map_blocks(self._count, dtype=X.dtype)

    def _count(self, block):
        with self.lock:
            self.bytes += block.nbytes
        return block


def make_zarr(path, n_rows, n_features, n_components, seed=0, chunk_rows=250_000, spread=8.0):
    rng = np.random.RandomState(seed)
    centres = rng.uniform(-spread, spread, size=(n_components, n_features))
    scales = rng.uniform(0.5, 1.5, size=(n_components, n_features))

    def block(b, block_info=None):
        loc = block_info[None]["array-location"][0]
        r = np.random.RandomState(seed + 1 + loc[0])
        labels = r.randint(n_components, size=loc[1] - loc[0])
        x = centres[labels] + r.standard_normal((len(labels), n_features)) * scales[labels]
        return x.astype(np.float32)

    X = da.map_blocks(
        block, da.empty((n_rows, n_features), chunks=(chunk_rows, n_features), dtype=np.float32),
        dtype=np.float32,
    )
    X.to_zarr(path, overwrite=True)
    return daskem.io.read(path)


def bench_grid(path, n_rows, ks, types, max_iter):
    X = make_zarr(path, n_rows, 6, 4)
    rows = []
    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid = ReadCounter(X)
        t = time.perf_counter()
        table, best = select_model(grid.array, ks, types, random_state=0, max_iter=max_iter, cache=False)
        grid_time = time.perf_counter() - t
        sep = ReadCounter(X)
        t = time.perf_counter()
        for cov in types:
            for k in ks:
                GaussianMixture(k, covariance_type=cov, random_state=0, max_iter=max_iter, cache=False).fit(sep.array)
        sep_time = time.perf_counter() - t
    n = len(ks) * len(types)
    rows.append(("select_model (shared passes)", n, grid_time, grid.bytes))
    rows.append(("separate fits", n, sep_time, sep.bytes))
    return rows, X.nbytes, best, int(table.n_iter.max()), int(table.n_iter.sum())


def bench_online(path, n_rows, n_components, batch_rows):
    # overlapping components, so that batch EM needs many passes
    # two chunks per batch, so that both cores work on every update
    X = make_zarr(path, n_rows, 8, n_components, seed=3, spread=2.0, chunk_rows=batch_rows // 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t = time.perf_counter()
        batch = GaussianMixture(n_components, random_state=0, tol=1e-6, max_iter=300, cache=False).fit(X)
        batch_time = time.perf_counter() - t
        final = batch.lower_bounds_[-1]
        within = next(i + 1 for i, lb in enumerate(batch.lower_bounds_) if abs(lb - final) <= 0.01 * abs(final))
        online = []
        for passes in (1, 2):
            t = time.perf_counter()
            g = GaussianMixture(
                n_components, algorithm="online", batch_size=batch_rows, max_iter=passes,
                tol=0, random_state=0, cache=False,
            ).fit(X)
            elapsed = time.perf_counter() - t
            online.append((passes, g.score(X), elapsed))
    batch_score = batch.score(X)
    return batch, batch_score, batch_time, within, online


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--out", help="write the markdown report here")
    p.add_argument("--only", choices=["grid", "online"], help="run one of the two benchmarks")
    a = p.parse_args()
    if a.quick:
        grid_rows, ks, types, max_iter, online_rows, batch_rows = 6_000, [1, 2], ("full", "diag"), 10, 12_000, 2_000
    else:
        grid_rows, ks, types, max_iter = 1_000_000, list(range(1, 11)), ("full", "tied", "diag", "spherical"), 100
        online_rows, batch_rows = 10_000_000, 50_000
    lines = [
        "## Issue 7: model-selection grid and online EM",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; "
        f"daskem {daskem.__version__}, dask {dask.__version__}; {time.strftime('%Y-%m-%d')}.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if a.only != "online":
            lines += grid_section(tmp, grid_rows, ks, types, max_iter)
        if a.only != "grid":
            lines += online_section(tmp, online_rows, batch_rows)
    report = "\n".join(lines)
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report + "\n")


def grid_section(tmp, grid_rows, ks, types, max_iter):
    rows, nbytes, best, longest, total_iters = bench_grid(f"{tmp}/grid.zarr", grid_rows, ks, types, max_iter)
    lines = [
        f"### {len(ks) * len(types)}-candidate grid on Zarr ({grid_rows:,} rows x 6 float32, "
        f"{nbytes / 2**20:.0f} MiB; K in {ks[0]}..{ks[-1]}, {', '.join(types)}; max_iter={max_iter})",
        "",
        "| how | candidates | wall time (s) | bytes read (GiB) | reads of the data |",
        "|---|---|---|---|---|",
    ]
    for how, n, secs, read in rows:
        lines.append(f"| {how} | {n} | {secs:.1f} | {read / 2**30:.2f} | {read / nbytes:.0f} |")
    lines += [
        "",
        f"Ratio: {rows[1][2] / rows[0][2]:.1f}x less wall time and {rows[1][3] / rows[0][3]:.1f}x fewer bytes read. "
        f"Longest candidate: {longest} EM iterations; all candidates together: {total_iters}. "
        f"Best by BIC: K={best.n_components}, {best.covariance_type} (data generated with K=4).",
        "",
    ]
    return lines


def online_section(tmp, online_rows, batch_rows):
    batch, batch_score, batch_time, within, online = bench_online(
        f"{tmp}/online.zarr", online_rows, 8, batch_rows
    )
    lines = [
        f"### Online EM on {online_rows:,} rows x 8 float32 (K=8, full, batches of {batch_rows:,} rows)",
        "",
        "| run | passes over the data | mean log-likelihood | relative gap to batch EM | wall time (s) |",
        "|---|---|---|---|---|",
        f"| batch EM (tol=1e-6) | 3 (k-means\\|\\|) + 1 (validation) + {batch.n_iter_} | {batch_score:.5f} | 0 | {batch_time:.1f} |",
    ]
    for passes, score, secs in online:
        gap = abs(score - batch_score) / abs(batch_score)
        lines.append(f"| online EM | 1 (validation) + {passes} | {score:.5f} | {gap:.2e} | {secs:.1f} |")
    lines += [
        "",
        f"Batch EM needed {within} iterations to come within 1% of its own final log-likelihood, "
        f"and {batch.n_iter_} to converge.",
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
