"""A scheduled, restartable refit: a Prefect flow when Prefect is installed,
plain subprocess calls otherwise.

Prefect is not a daskem dependency. With it (``pip install prefect``), serve
the flow on a schedule::

    python examples/prefect_flow.py /data/features.zarr --out-dir /data/models --serve "30 1 * * *"

Without it, use cron (one line of crontab)::

    30 1 * * *  cd /srv/daskem && DASK_SCHEDULER_ADDRESS=tcp://10.0.0.5:8786 python examples/prefect_flow.py /data/features.zarr --out-dir /data/models >> /var/log/daskem-refit.log 2>&1

Each run calls ``daskem fit --checkpoint DIR --resume``: a failed attempt
(exit code 1: lost workers, preemption) is retried and continues from the last
completed EM iteration; bad input (exit code 2) is not retried. Then
``daskem score`` reports the new model's mean log-likelihood. Without DATA, a
small synthetic dataset ($DASKEM_EXAMPLE_ROWS rows) is written first.
Set DASKEM_NO_PREFECT=1 to use the plain path even where Prefect is installed.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

# The CLI of the daskem installed with this Python (same as the `daskem` command).
DASKEM = [sys.executable, "-m", "daskem.cli"]


def fit_args(data, model, checkpoint, n_components=4, cluster_args=()):
    """Arguments of the `daskem fit` call (after the program name)."""
    return ["fit", data, "--n-components", str(n_components), "--covariance-type", "full",
            "--random-state", "0", "--checkpoint", checkpoint, "--resume", "--out", model,
            "--quiet", *cluster_args]


def score_args(model, data, cluster_args=()):
    return ["score", model, data, "--json", "--quiet", *cluster_args]


class BadInput(Exception):
    """daskem exit code 2: retrying cannot help."""


def run_daskem(args):
    """Run the daskem CLI; exit code 1 raises RuntimeError (retry), 2 raises BadInput."""
    print("$ daskem " + " ".join(args), flush=True)
    proc = subprocess.run([*DASKEM, *args], capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode == 2:
        raise BadInput(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "bad input")
    if proc.returncode != 0:
        raise RuntimeError(f"daskem {args[0]} failed with exit code {proc.returncode}")
    return proc.stdout


def fit_model(data, model, checkpoint, n_components, cluster_args):
    if os.path.exists(model):
        print(f"{model} already exists; not refitting", flush=True)
        return model
    run_daskem(fit_args(data, model, checkpoint, n_components, cluster_args))
    return model


def score_model(model, data, cluster_args):
    result = json.loads(run_daskem(score_args(model, data, cluster_args)))
    print(f"mean log-likelihood {result['mean_log_likelihood']:.6f}, BIC {result['bic']:.1f}", flush=True)
    return result


def make_example_data(path, n_rows):
    import numpy as np

    from daskem.io import write_zarr

    rng = np.random.default_rng(0)
    centres = rng.uniform(-8, 8, size=(4, 3))
    write_zarr(centres[rng.integers(4, size=n_rows)] + rng.standard_normal((n_rows, 3)), path)
    print(f"wrote example data to {path}", flush=True)


def refit(data, out_dir, n_components=4, cluster_args=(), attempts=3, retry_delay=30.0):
    """The plain-Python flow: fit with retries (each resuming), then score."""
    run = datetime.date.today().isoformat()
    model = os.path.join(out_dir, f"model-{run}.npz")
    checkpoint = os.path.join(out_dir, f"checkpoint-{run}")
    for attempt in range(1, attempts + 1):
        try:
            fit_model(data, model, checkpoint, n_components, cluster_args)
            break
        except RuntimeError as e:
            print(f"attempt {attempt}/{attempts}: {e}; the checkpoint is kept", file=sys.stderr, flush=True)
            if attempt == attempts:
                raise
            time.sleep(retry_delay)
    return score_model(model, data, cluster_args)


def prefect_flow():
    """The same steps as Prefect tasks (Prefect retries, logs and schedules them)."""
    from prefect import flow, task

    def retry_unless_bad_input(task, task_run, state):
        try:
            state.result()
        except BadInput:
            return False
        except Exception:
            return True
        return False

    fit_task = task(retries=2, retry_delay_seconds=30,
                    retry_condition_fn=retry_unless_bad_input)(fit_model)
    score_task = task(score_model)

    @flow(name="daskem-refit")
    def daskem_refit(data: str, out_dir: str, n_components: int = 4, cluster_args: tuple = ()):
        run = datetime.date.today().isoformat()
        model = fit_task(data, os.path.join(out_dir, f"model-{run}.npz"),
                         os.path.join(out_dir, f"checkpoint-{run}"), n_components, cluster_args)
        return score_task(model, data, cluster_args)

    return daskem_refit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", help="training data (path or URL readable by the workers)")
    p.add_argument("--out-dir", default=os.environ.get("DASKEM_EXAMPLE_DIR"))
    p.add_argument("--n-components", type=int, default=4)
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("--serve", metavar="CRON", help="with Prefect: serve the flow on this cron schedule")
    p.add_argument("--cluster-args", default=os.environ.get("DASKEM_LOCAL_CLUSTER", ""),
                   help='extra daskem cluster options, e.g. "--workers 2"')
    args = p.parse_args(argv)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="daskem-flow-")
    os.makedirs(out_dir, exist_ok=True)
    data = args.data
    if data is None:
        data = os.path.join(out_dir, "example-data.zarr")
        if not os.path.exists(data):
            make_example_data(data, int(os.environ.get("DASKEM_EXAMPLE_ROWS", 200_000)))
    cluster_args = tuple(args.cluster_args.split())

    use_prefect = not os.environ.get("DASKEM_NO_PREFECT")
    if use_prefect:
        try:
            flow = prefect_flow()
        except ImportError:
            use_prefect = False
    if use_prefect:
        print("running as a Prefect flow", flush=True)
        if args.serve:
            flow.serve(name="daskem-refit", cron=args.serve,
                       parameters={"data": data, "out_dir": out_dir, "n_components": args.n_components,
                                   "cluster_args": cluster_args})
            return
        result = flow(data, out_dir, args.n_components, cluster_args)
    else:
        if args.serve:
            sys.exit("--serve needs Prefect (pip install prefect); use the cron line in this file instead")
        print("Prefect is not installed: running the steps with subprocess", flush=True)
        try:
            result = refit(data, out_dir, args.n_components, cluster_args, attempts=args.attempts)
        except BadInput as e:
            sys.exit(f"bad input: {e}")
    print(f"refit done: {json.dumps({k: result[k] for k in ('model', 'n_samples', 'mean_log_likelihood')})}")


if __name__ == "__main__":
    main()
