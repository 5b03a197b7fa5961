"""Fit data larger than memory: write a Zarr dataset, then stream it through EM.

    python examples/out_of_core_zarr.py                 # 20,000,000 rows x 8 float32 (640 MB)
    python examples/out_of_core_zarr.py --rows 20000    # or DASKEM_EXAMPLE_ROWS=20000

1. The dataset is generated and written chunk by chunk (never whole in memory)
   with daskem.io.write_zarr.
2. daskem.io.read opens it lazily as row chunks sized for the workers (1/32
   of their memory limit per thread, at most 128 MiB, whole stored Zarr
   chunks; --read-chunk-rows overrides that, e.g. for tiny data).
3. The fit runs on a LocalCluster whose workers have a small memory limit,
   with cache=False: every EM iteration streams the chunks from disk again,
   so memory use stays at a few chunks per worker whatever the data size.
4. Labels are written back to Zarr by the workers, again chunk by chunk.
"""

import argparse
import os
import tempfile
import time

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import daskem
from daskem.io import read, write_output, write_zarr

N_FEATURES = 8
N_COMPONENTS = 5


def _block(block_info=None):
    """One chunk of samples from a fixed mixture, seeded by the chunk's position."""
    (start, stop), _ = block_info[None]["array-location"]
    rng = np.random.default_rng([42, start])
    centres = np.random.default_rng(0).uniform(-10, 10, size=(N_COMPONENTS, N_FEATURES))
    labels = rng.integers(N_COMPONENTS, size=stop - start)
    return (centres[labels] + rng.standard_normal((stop - start, N_FEATURES))).astype(np.float32)


def synthetic(n_rows, chunk_rows):
    chunks = ((min(chunk_rows, n_rows - s) for s in range(0, n_rows, chunk_rows)), (N_FEATURES,))
    return da.map_blocks(_block, chunks=tuple(map(tuple, chunks)), dtype=np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=int(os.environ.get("DASKEM_EXAMPLE_ROWS", 20_000_000)))
    p.add_argument("--chunk-rows", type=int, default=None,
                   help="rows per stored Zarr chunk (default: about 16 MiB, or rows/4 for small data)")
    p.add_argument("--read-chunk-rows", type=int, default=None,
                   help="rows per Dask chunk when reading (default: sized for the workers' memory)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="1GiB", help="per worker")
    p.add_argument("--out-dir", default=os.environ.get("DASKEM_EXAMPLE_DIR"))
    args = p.parse_args(argv)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="daskem-zarr-")
    os.makedirs(out_dir, exist_ok=True)
    chunk_rows = args.chunk_rows or min(2**24 // (4 * N_FEATURES), max(1, -(-args.rows // 4)))

    with LocalCluster(n_workers=args.workers, threads_per_worker=2, memory_limit=args.memory_limit,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        print(f"local cluster: {args.workers} workers x 2 threads, {args.memory_limit} each; "
              f"dashboard {client.dashboard_link}")

        store = os.path.join(out_dir, "features.zarr")
        start = time.perf_counter()
        write_zarr(synthetic(args.rows, chunk_rows), store)
        print(f"wrote {store}: {args.rows} rows x {N_FEATURES} float32 "
              f"in {time.perf_counter() - start:.1f} s")

        X = read(store, chunks=args.read_chunk_rows)
        print(f"reading it as {len(X.chunks[0])} chunk(s) of up to {X.chunks[0][0]} rows "
              f"({X.nbytes / 2**20:.1f} MiB in all)")

        gm = daskem.GaussianMixture(n_components=N_COMPONENTS, covariance_type="diag",
                                    cache=False, random_state=0)   # stream from disk
        start = time.perf_counter()
        gm.fit(X)
        print(f"streamed fit: converged: {gm.converged_} after {gm.n_iter_} iterations "
              f"in {time.perf_counter() - start:.1f} s; lower bound {gm.lower_bound_:.4f}")

        labels = gm.predict(X)                                  # lazy Dask array
        target = os.path.join(out_dir, "labels.zarr")
        write_output(labels, target)                            # written by the workers
        counts = np.bincount(da.from_zarr(target).compute(), minlength=N_COMPONENTS)
        print(f"labels written to {target}; rows per component: {counts.tolist()}")

    model = os.path.join(out_dir, "model.npz")
    gm.save(model)
    print(f"model written to {model}")


if __name__ == "__main__":
    main()
