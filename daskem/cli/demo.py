"""The ``demo`` command: a fit of synthetic data on a local cluster, with a plot."""

import os
import sys
import time
from typing import Annotated

import typer

from ._app import EXIT_CODES_HELP, app
from ._data import _check_local, read_data
from ._errors import BadInput
from ._fitting import fit_with_progress
from ._options import (
    CLUSTER,
    OUTPUT,
    ClusterOptions,
    DashboardOpt,
    LogJsonOpt,
    MemoryOpt,
    NoWorkersTimeoutOpt,
    QuietOpt,
    SchedulerFileOpt,
    SchedulerOpt,
    ThreadsOpt,
    WorkersOpt,
    dask_client,
)
from ._report import _isatty, _json_number, _reporter, _warnings_to, print_model_summary

DEMO_CHUNK_ROWS = 100_000


@app.command(epilog=EXIT_CODES_HELP)
def demo(
    out: Annotated[str, typer.Option("--out", "-o", metavar="PNG",
                                     help="Plot to write (replaced if it exists).",
                                     rich_help_panel=OUTPUT)] = "daskem-demo.png",
    rows: Annotated[int, typer.Option("--rows", min=100, help="Rows of synthetic data.")] = 2_000_000,
    n_components: Annotated[int, typer.Option("--n-components", "-k", min=1, max=12,
                                              help="Components of the synthetic mixture.")] = 4,
    n_features: Annotated[int, typer.Option("--n-features", min=2, max=16,
                                            help="Features of the synthetic data.")] = 2,
    random_state: Annotated[int, typer.Option("--random-state", min=0, help="Seed.")] = 0,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = "auto",
    processes: Annotated[bool, typer.Option(
        "--processes/--no-processes",
        help="Local workers as separate processes, or (default here, as it starts faster) as "
             "threads of this process.",
        rich_help_panel=CLUSTER)] = False,
    dashboard: DashboardOpt = True,
    no_workers_timeout: NoWorkersTimeoutOpt = None,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    """Fit a synthetic Zarr dataset on a local cluster, print the summary and write a plot.

    The data (overlapping Gaussian components: EM needs a dozen steps and more)
    are written to a temporary folder, which is removed afterwards, and
    streamed from it on every iteration, as data larger than memory would
    be. The plot shows the convergence curve and the fitted components over
    a sample of the data, with the true means against the fitted ones.
    """
    import tempfile

    from .. import plotting
    from ..demo import make_demo_zarr
    from ..gaussian_mixture import GaussianMixture

    reporter = _reporter("demo", quiet, log_json)
    cluster = ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker,
                             memory_limit, processes, dashboard,
                             no_workers_timeout=no_workers_timeout)
    cluster.check()
    if scheduler or scheduler_file:
        raise BadInput("the demo writes its data to a local temporary folder: run it on a local cluster")
    _check_local(out, "--out (the image)")
    with tempfile.TemporaryDirectory(prefix="daskem-demo-") as tmp:
        store = os.path.join(tmp, "demo.zarr")
        truth = make_demo_zarr(store, rows, n_components, n_features, random_state,
                               chunk_rows=DEMO_CHUNK_ROWS)
        reporter.event("start", f"synthetic data: {rows:,} rows x {n_features} features, "
                                f"{n_components} overlapping components, in {store} (streamed "
                                "from there on every iteration)",
                       data=store, shape=[rows, n_features], n_components=n_components)
        X = read_data(store, chunks=DEMO_CHUNK_ROWS)
        est = GaussianMixture(n_components, covariance_type="full", random_state=random_state,
                              max_iter=300, tol=1e-5, cache=False)
        reporter.begin_fit(1, est.max_iter)
        started = time.perf_counter()
        with _warnings_to(reporter), dask_client(cluster, reporter):
            fit_with_progress(est, X, reporter)
            points = plotting.sample_rows(X, 5000, random_state)
        seconds = time.perf_counter() - started
        reporter.event("converged" if est.converged_ else "not_converged",
                       f"{'converged' if est.converged_ else 'did not converge'} after "
                       f"{est.n_iter_} iteration(s) in {seconds:.1f} s",
                       n_iter=est.n_iter_, lower_bound=_json_number(est.lower_bound_))
        fig = plotting.plot_model(est, points, title=f"daskem demo: {rows:,} rows, streamed from Zarr",
                                  true_means=truth.means)
        plotting.save_figure(fig, out)
    if not quiet and not log_json:
        print_model_summary(est, "demo model", terminal=_isatty(sys.stdout), n_rows=rows)
        error = truth.mean_error(est.means_)
        print(f"largest distance between a true mean and the nearest fitted mean: {error:.4f}")
        print(f"plot written to {out}")
    reporter.event("finished", f"plot written to {out} ({seconds:.1f} s)", out=out,
                   seconds=round(seconds, 3))
