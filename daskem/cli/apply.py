"""Commands that use a fitted model: ``predict``, ``score``, ``info`` and ``plot``."""

import json
import os
import time
from typing import Annotated, Optional

import typer

from ._app import EXIT_CODES_HELP, app
from ._data import (
    _check_local,
    _check_new_output,
    check_features,
    load_model_file,
    model_columns,
    read_data,
    removing_new_temporaries,
)
from ._errors import BadInput, bad_input
from ._options import (
    OUTPUT,
    ChunksOpt,
    ClusterOptions,
    ColumnsOpt,
    DashboardOpt,
    LogJsonOpt,
    MemoryOpt,
    NoWorkersTimeoutOpt,
    ProcessesOpt,
    QuietOpt,
    SchedulerFileOpt,
    SchedulerOpt,
    ThreadsOpt,
    WorkersOpt,
    dask_client,
    parse_columns,
)
from ._report import _fmt, _json_fields, _json_number, _reporter, _warnings_to, print_model_summary

# --------------------------------------------------------------------------
# predict, score
# --------------------------------------------------------------------------


@app.command(epilog=EXIT_CODES_HELP)
def predict(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model file written by `daskem fit`.")],
    data: Annotated[str, typer.Argument(metavar="DATA", help="Data to label (same features as the fit).")],
    out: Annotated[str, typer.Option(
        "--out", "-o", metavar="PATH",
        help="Output: .zarr for Zarr, .parquet or .pq for a Parquet directory.",
        rich_help_panel=OUTPUT)],
    proba: Annotated[bool, typer.Option(
        "--proba", help="Write the component probabilities (n x K) instead of labels.")] = False,
    score_samples: Annotated[bool, typer.Option(
        "--score-samples", help="Write each row's log-likelihood instead of labels.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output.", rich_help_panel=OUTPUT)] = False,
    columns: ColumnsOpt = None,
    chunks: ChunksOpt = None,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = "auto",
    processes: ProcessesOpt = True,
    dashboard: DashboardOpt = True,
    no_workers_timeout: NoWorkersTimeoutOpt = None,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    """Label DATA with the most probable component (or write probabilities or log-likelihoods).

    The output is written atomically: on failure nothing is left at --out.
    """
    reporter = _reporter("predict", quiet, log_json)
    if proba and score_samples:
        raise BadInput("give at most one of --proba and --score-samples")
    what = "probabilities" if proba else "log-likelihoods" if score_samples else "labels"

    def result(est, X):
        return est.predict_proba(X) if proba else est.score_samples(X) if score_samples else est.predict(X)

    def parquet_columns(est):
        if proba:
            return [f"p{k}" for k in range(est.n_components)]
        return ["log_likelihood" if score_samples else "label"]

    _write_per_row(reporter, what, model, data, out, overwrite, columns, chunks, result, parquet_columns,
                   ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker, memory_limit,
                                  processes, dashboard, no_workers_timeout=no_workers_timeout))


def _write_per_row(reporter, what, model, data, out, overwrite, columns, chunks, result, parquet_columns,
                   cluster):
    """Read DATA, compute ``result(est, X)`` per row and write it to ``out`` atomically."""
    cluster.check()
    ext = os.path.splitext(out.rstrip("/"))[1].lower()
    fmt = {".zarr": "zarr", ".parquet": "parquet", ".pq": "parquet"}.get(ext)
    if fmt is None:
        raise BadInput(f"cannot tell the output format of {out!r}: use a .zarr, .parquet or .pq path")
    _check_new_output(out, overwrite)
    est = load_model_file(model)
    columns = model_columns(est, data, parse_columns(columns), model)
    X = read_data(data, columns, chunks)
    check_features(est, X, model)
    reporter.event("start", f"writing {what} of {X.shape[0]} rows of {data} to {out}",
                   model=model, data=data, out=out, output=what, shape=list(X.shape))
    kwargs = {"overwrite": overwrite}
    if fmt == "parquet":
        kwargs["columns"] = parquet_columns(est)
    started = time.perf_counter()
    with removing_new_temporaries(out), _warnings_to(reporter), dask_client(cluster, reporter):
        from ..io import write_output

        X = read_data(data, columns, chunks)  # chunked for the cluster's workers
        with bad_input(ValueError):
            values = result(est, X)
        with bad_input(ValueError, FileExistsError):
            write_output(values, out, format=fmt, **kwargs)
    reporter.event("finished", f"{what} written to {out} ({time.perf_counter() - started:.1f} s)",
                   out=out, seconds=round(time.perf_counter() - started, 3))


@app.command(epilog=EXIT_CODES_HELP)
def impute(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model file written by `daskem fit`.")],
    data: Annotated[str, typer.Argument(metavar="DATA", help="Data with missing values (NaN).")],
    out: Annotated[str, typer.Option(
        "--out", "-o", metavar="PATH",
        help="Output: .zarr for Zarr, .parquet or .pq for a Parquet directory.",
        rich_help_panel=OUTPUT)],
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output.", rich_help_panel=OUTPUT)] = False,
    columns: ColumnsOpt = None,
    chunks: ChunksOpt = None,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = "auto",
    processes: ProcessesOpt = True,
    dashboard: DashboardOpt = True,
    no_workers_timeout: NoWorkersTimeoutOpt = None,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    """Write DATA with each missing value replaced by its conditional mean under MODEL.

    A hole becomes sum_k p(k | observed values) E\\[value | observed values, k]; observed
    values are unchanged. Works with any model of `daskem fit` or `daskem select` except a
    --bayesian one. The output is written atomically: on failure nothing is left at --out.
    """
    reporter = _reporter("impute", quiet, log_json)

    def parquet_columns(est):
        names = getattr(est, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else [f"x{j}" for j in range(est.n_features_in_)]

    def result(est, X):
        if not hasattr(est, "impute"):
            raise ValueError(f"a {type(est).__name__} does not impute missing values")
        return est.impute(X)

    _write_per_row(reporter, "imputed data", model, data, out, overwrite, columns, chunks, result,
                   parquet_columns,
                   ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker, memory_limit,
                                  processes, dashboard, no_workers_timeout=no_workers_timeout))


@app.command(epilog=EXIT_CODES_HELP)
def score(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model file written by `daskem fit`.")],
    data: Annotated[str, typer.Argument(metavar="DATA", help="Data to score.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.",
                                          rich_help_panel=OUTPUT)] = False,
    columns: ColumnsOpt = None,
    chunks: ChunksOpt = None,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = "auto",
    processes: ProcessesOpt = True,
    dashboard: DashboardOpt = True,
    no_workers_timeout: NoWorkersTimeoutOpt = None,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    """Print the mean log-likelihood of DATA under MODEL, with BIC and AIC (one pass)."""
    reporter = _reporter("score", quiet, log_json)
    cluster = ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker,
                             memory_limit, processes, dashboard,
                             no_workers_timeout=no_workers_timeout)
    cluster.check()
    est = load_model_file(model)
    columns = model_columns(est, data, parse_columns(columns), model)
    X = read_data(data, columns, chunks)
    check_features(est, X, model)
    from .._predict import criteria

    with _warnings_to(reporter), dask_client(cluster, reporter):
        X = read_data(data, columns, chunks)  # chunked for the cluster's workers
        with bad_input(ValueError):
            scores = criteria(est, X)
    n = int(scores["n_samples"])
    mean = scores["log_likelihood"] / n
    result = {
        "model": model,
        "data": data,
        "n_samples": n,
        "n_features": int(X.shape[1]),
        "mean_log_likelihood": mean,
        # BIC and AIC where the model defines them (not for a variational mixture)
        **{k: scores[k] for k in ("n_parameters", "bic", "aic") if k in scores},
    }
    reporter.event("finished", "scored", **_json_fields(result))
    if as_json:
        print(json.dumps(_json_fields(result)))
    else:
        print(f"rows                 {n}")
        print(f"mean log-likelihood  {mean:.6f}")
        if "bic" in result:
            print(f"BIC                  {result['bic']:.6f}")
            print(f"AIC                  {result['aic']:.6f}")


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------


@app.command(epilog=EXIT_CODES_HELP)
def info(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model file written by `daskem fit`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Describe a model file: parameters, fit, training data and versions."""
    from .._predict import n_parameters
    from .._registry import family_of
    from ..persistence import read_model_metadata

    _reporter("info", False, False)
    est = load_model_file(model)
    from ..bayesian_mixture import ACTIVE_WEIGHT

    with bad_input(ValueError, FileNotFoundError):
        meta, _ = read_model_metadata(model)
    bayesian = hasattr(est, "weight_concentration_")
    description = {
        "model": model,
        "format": meta["format"],
        "format_version": meta["format_version"],
        "estimator": type(est).__name__,
        "covariance_type": est.covariance_type,
        "n_components": int(est.n_components),
        "n_features_in": int(est.n_features_in_),
        "feature_names_in": (None if getattr(est, "feature_names_in_", None) is None
                             else [str(n) for n in est.feature_names_in_]),
        "converged": bool(est.converged_),
        "n_iter": int(est.n_iter_),
        "lower_bound": _json_number(est.lower_bound_),
        "lower_bounds": [_json_number(x) for x in est.lower_bounds_],
        "iteration_seconds": [_json_number(x) for x in est.iteration_seconds_],
        # not defined for a variational mixture
        "n_parameters": n_parameters(est) if family_of(est).supports_criteria else None,
        "n_passes": getattr(est, "n_passes_", None),
        "params": {k: v for k, v in meta["params"].items()},
        "weights": est.weights_.tolist(),
        "means": est.means_.tolist(),
        "covariances": est.covariances_.tolist(),
        **({"weight_concentration_prior_type": est.weight_concentration_prior_type,
            "weight_concentration_prior": est.weight_concentration_prior_,
            "active_components": int((est.weights_ > ACTIVE_WEIGHT).sum())} if bayesian else {}),
        "metadata": meta.get("metadata", {}),
        "versions": meta.get("versions", {}),
        "created": meta.get("created"),
    }
    if as_json:
        print(json.dumps(description, allow_nan=False))
        return
    print(f"model            {model}")
    print(f"format           {meta['format']} version {meta['format_version']}, "
          f"written {meta.get('created', '?')} by daskem {meta.get('versions', {}).get('daskem', '?')}")
    if bayesian:
        print(f"model            variational mixture, {est.weight_concentration_prior_type} prior "
              f"(concentration {est.weight_concentration_prior_:.4g}); "
              f"{description['active_components']} component(s) with weight > {ACTIVE_WEIGHT:g}")
    print(f"components       {est.n_components} ({est.covariance_type} covariances), "
          f"{est.n_features_in_} feature(s)"
          + (f", {description['n_parameters']} free parameters" if not bayesian else ""))
    if description["feature_names_in"]:
        print(f"features         {', '.join(description['feature_names_in'])}")
    print(f"fit              {'converged' if est.converged_ else 'did not converge'} after "
          f"{est.n_iter_} iteration(s), lower bound {_fmt(est.lower_bound_, '.6f')}, "
          f"{sum(est.iteration_seconds_):.2f} s in iterations"
          + (f", {est.n_passes_} passes over the data" if hasattr(est, "n_passes_") else ""))
    data = description["metadata"].get("data")
    if isinstance(data, dict):
        shape = "x".join(str(n) for n in data.get("shape", []))
        print(f"training data    {data.get('source')} ({shape}, {data.get('dtype')})")
    params = ", ".join(f"{k}={v}" for k, v in sorted(meta["params"].items())
                       if k in ("tol", "reg_covar", "max_iter", "n_init", "init_params", "random_state"))
    print(f"options          {params}")
    print_model_summary(est, "components", terminal=False)


# --------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------


def _parse_features(text: str, n_features: int) -> list[int]:
    try:
        idx = [int(t) for t in text.split(",")]
    except ValueError:
        raise BadInput(f"invalid --features {text!r}: give two column indices, e.g. 0,1") from None
    if len(idx) != 2 or idx[0] == idx[1]:
        raise BadInput(f"invalid --features {text!r}: give two different column indices, e.g. 0,1")
    for i in idx:
        if not 0 <= i < n_features:
            raise BadInput(f"invalid --features {text!r}: the model has features 0..{n_features - 1}")
    return idx


@app.command(epilog=EXIT_CODES_HELP)
def plot(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Model file written by `daskem fit`.")],
    data: Annotated[Optional[str], typer.Argument(
        metavar="DATA", help="Data to draw a sample of under the ellipses.", show_default=False)] = None,
    out: Annotated[str, typer.Option("--out", "-o", metavar="PNG", help="Image to write.",
                                     rich_help_panel=OUTPUT)] = "daskem-plot.png",
    features: Annotated[Optional[str], typer.Option(
        "--features", metavar="I,J", help="The two features to draw (default 0,1).")] = None,
    pca: Annotated[bool, typer.Option(
        "--pca", help="Draw the mixture's two principal directions instead of two features.")] = False,
    sample: Annotated[int, typer.Option("--sample", min=1, help="Rows of DATA to draw at most.")] = 5000,
    random_state: Annotated[int, typer.Option("--random-state", min=0, help="Seed of the sample.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing image.",
                                            rich_help_panel=OUTPUT)] = False,
    columns: ColumnsOpt = None,
    chunks: ChunksOpt = None,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    workers: WorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    memory_limit: MemoryOpt = "auto",
    processes: ProcessesOpt = True,
    dashboard: DashboardOpt = True,
    no_workers_timeout: NoWorkersTimeoutOpt = None,
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    """Plot the convergence curve and the components' 2-sigma ellipses over a data sample (PNG)."""
    from .. import plotting

    reporter = _reporter("plot", quiet, log_json)
    if features is not None and pca:
        raise BadInput("give at most one of --features and --pca")
    _check_local(out, "--out (the image)")
    _check_new_output(out, overwrite)
    est = load_model_file(model)
    idx = _parse_features(features, est.n_features_in_) if features is not None else None
    points = None
    if data is not None:
        cluster = ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker,
                                 memory_limit, processes, dashboard,
                                 no_workers_timeout=no_workers_timeout)
        cluster.check()
        columns = model_columns(est, data, parse_columns(columns), model)
        X = read_data(data, columns, chunks)
        check_features(est, X, model)
        with _warnings_to(reporter), dask_client(cluster, reporter):
            X = read_data(data, columns, chunks)  # chunked for the cluster's workers
            with bad_input(ValueError):
                points = plotting.sample_rows(X, sample, random_state)
    with bad_input(ValueError):
        fig = plotting.plot_model(est, points, features=idx, pca=pca, title=os.path.basename(model))
    plotting.save_figure(fig, out)
    reporter.event("finished", f"plot written to {out}", out=out)
