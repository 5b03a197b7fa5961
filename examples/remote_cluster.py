"""Fit on a remote Dask cluster (DASK_SCHEDULER_ADDRESS), or on a local one if unset.

    DASK_SCHEDULER_ADDRESS=tcp://scheduler:8786 python examples/remote_cluster.py
    DASK_SCHEDULER_ADDRESS=tcp://scheduler:8786 python examples/remote_cluster.py --data s3://bucket/x.zarr
    python examples/remote_cluster.py --rows 5000        # no address: a LocalCluster on 127.0.0.1

Only the client runs here. The data must be readable by the workers: give an
object-store URL or a path on a filesystem they share (--data), or let the
workers generate synthetic data themselves (the default), which needs no
shared storage. The fitted model comes back to the client and is saved here.
For TLS, set the distributed.comm.tls.* configuration (deploy/README.md).
"""

import argparse
import os
import tempfile
import time
from contextlib import ExitStack

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import daskem
from daskem.io import cache_decision, read


def _block(block_info=None):
    (start, stop), _ = block_info[None]["array-location"]
    rng = np.random.default_rng([7, start])
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 6.0, 6.0], [6.0, 0.0, 6.0]])
    return centres[rng.integers(4, size=stop - start)] + rng.standard_normal((stop - start, 3))


def synthetic(n_rows, chunk_rows=250_000):
    """A Dask array generated on the workers, chunk by chunk."""
    rows = tuple(min(chunk_rows, n_rows - s) for s in range(0, n_rows, chunk_rows))
    return da.map_blocks(_block, chunks=(rows, (3,)), dtype=np.float64)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="Zarr/Parquet/.npy path or URL readable by the workers")
    p.add_argument("--rows", type=int, default=int(os.environ.get("DASKEM_EXAMPLE_ROWS", 5_000_000)),
                   help="rows of synthetic data when --data is not given")
    p.add_argument("--n-components", type=int, default=4)
    p.add_argument("--out-dir", default=os.environ.get("DASKEM_EXAMPLE_DIR"))
    args = p.parse_args(argv)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="daskem-remote-")
    os.makedirs(out_dir, exist_ok=True)

    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    with ExitStack() as stack:
        if address:
            client = stack.enter_context(Client(address, timeout="30s"))
            print(f"connected to {address}")
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"))
            client = stack.enter_context(Client(cluster))
            print(f"DASK_SCHEDULER_ADDRESS is not set: started a local cluster at {cluster.scheduler_address}")
        client.wait_for_workers(1, timeout=120)
        workers = client.scheduler_info()["workers"]
        print(f"{len(workers)} worker(s), {sum(w['nthreads'] for w in workers.values())} thread(s)")

        X = read(args.data) if args.data else synthetic(args.rows, chunk_rows=max(1000, args.rows // 8))
        persist, reason = cache_decision(X, "auto")   # what cache='auto' will do on this cluster
        print(f"data: {X.shape[0]} rows x {X.shape[1]} features in {len(X.chunks[0])} chunk(s); {reason}")

        gm = daskem.GaussianMixture(n_components=args.n_components, random_state=0)  # cache='auto'
        start = time.perf_counter()
        gm.fit(X)
        print(f"converged: {gm.converged_} after {gm.n_iter_} iterations in "
              f"{time.perf_counter() - start:.1f} s; mean log-likelihood {gm.lower_bound_:.4f}")

    path = os.path.join(out_dir, "model.npz")
    gm.save(path)                       # the model is small: saved by the client
    print(f"model written to {path}")


if __name__ == "__main__":
    main()
