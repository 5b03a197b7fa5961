"""Fit daskem on Slurm with dask-jobqueue: workers are submitted as Slurm jobs.

Run this on a login node (or in a small batch job), in an environment that has
daskem and dask-jobqueue installed and that the compute nodes share::

    pip install dask-jobqueue        # not a daskem dependency
    python deploy/slurm/slurm_cluster.py /shared/data/input.zarr --n-components 8 \\
        --jobs 4 --out /shared/models/model.npz

Each Slurm job runs one Dask worker with ``--cores`` threads. Adjust the queue,
account, walltime and memory to your site. The scheduler runs in this process
and listens on the cluster network (``--interface``); do not run it on a host
whose port 8786 is reachable from outside the cluster without TLS
(see deploy/README.md).
"""

import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="Zarr store, Parquet dataset or .npy file on a shared filesystem")
    p.add_argument("--n-components", type=int, default=8)
    p.add_argument("--covariance-type", default="full")
    p.add_argument("--out", required=True, help="where to save the fitted model")
    p.add_argument("--jobs", type=int, default=4, help="number of Slurm jobs (one worker each)")
    p.add_argument("--cores", type=int, default=16, help="threads per worker (= cpus per job)")
    p.add_argument("--memory", default="64GiB", help="memory per job")
    p.add_argument("--walltime", default="04:00:00")
    p.add_argument("--queue", default=None, help="Slurm partition")
    p.add_argument("--account", default=None)
    p.add_argument("--interface", default=None, help="network interface, e.g. ib0")
    p.add_argument("--local-directory", default="$TMPDIR", help="worker spill directory on the node")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        sys.exit("this example needs dask-jobqueue: pip install dask-jobqueue")
    from distributed import Client

    import daskem
    from daskem.io import read

    cluster = SLURMCluster(
        queue=args.queue,
        account=args.account,
        cores=args.cores,
        processes=1,                       # one worker process per job, --cores threads
        memory=args.memory,
        walltime=args.walltime,
        interface=args.interface,
        local_directory=args.local_directory,
        # one BLAS thread per Dask thread
        job_script_prologue=[
            "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1",
        ],
        scheduler_options={"dashboard_address": "127.0.0.1:8787"},
    )
    cluster.scale(jobs=args.jobs)
    print(cluster.job_script())

    with cluster, Client(cluster) as client:
        # EM makes one pass per iteration: wait for (most of) the workers
        # rather than starting on the first one.
        client.wait_for_workers(max(1, args.jobs // 2), timeout="30 minutes")
        X = read(args.data)
        gm = daskem.GaussianMixture(
            args.n_components, covariance_type=args.covariance_type, random_state=0
        )
        gm.fit(X)
        gm.save(args.out)
        print(f"converged={gm.converged_} n_iter={gm.n_iter_} lower_bound={gm.lower_bound_:.6f}")
        print(f"model written to {args.out}")


if __name__ == "__main__":
    main()
