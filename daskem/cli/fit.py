"""The ``fit`` and ``select`` commands."""

import json
import os
import sys
import time
from typing import Annotated, Any, Optional, Union

import typer

from ._app import EXIT_CODES_HELP, app
from ._data import (
    LEGACY_CHUNK_BYTES,
    _check_local,
    _check_new_output,
    _remove_checkpoint,
    data_fingerprint,
    feature_columns,
    fit_chunking,
    format_bytes,
    read_weighted_data,
    weights_fingerprint,
)
from ._errors import BadInput, NotConverged, bad_input
from ._fitting import fit_with_progress
from ._options import (
    BAYESIAN,
    COVARIANCE_NAMES,
    OUTPUT,
    Acceleration,
    AccelerationOpt,
    CacheMode,
    CacheOpt,
    ChunksOpt,
    ClusterOptions,
    ColumnsOpt,
    CovarianceType,
    DashboardOpt,
    InitParams,
    InitParamsOpt,
    LogJsonOpt,
    MaxIterOpt,
    MemoryOpt,
    MissingMode,
    MissingOpt,
    NoWorkersTimeoutOpt,
    PriorType,
    ProcessesOpt,
    QuietOpt,
    RegCovarOpt,
    SchedulerFileOpt,
    SchedulerOpt,
    ThreadsOpt,
    WeightColumnOpt,
    WeightsOpt,
    WorkersOpt,
    _load_config,
    acceleration_value,
    cache_value,
    dask_client,
    parse_columns,
    parse_components,
)
from ._report import (
    Reporter,
    _fmt,
    _isatty,
    _json_fields,
    _json_number,
    _reporter,
    _warnings_to,
    print_model_summary,
)

FIT_HELP = (
    "Fit a Gaussian mixture to DATA (Zarr, Parquet or .npy; local path or fsspec URL) and "
    "write the model to --out (a .npz file, no pickle).\n\n"
    "With --checkpoint DIR the whole EM state is saved atomically after every iteration; "
    "after a crash, the same command with --resume continues from it (same result, bit for "
    "bit: the checkpoint keeps the row chunking, whatever the workers are then). The checkpoint "
    "is removed once the model is written; --resume without a checkpoint starts a new fit.\n\n"
    "Row chunks follow the cluster's workers (1/32 of their memory limit per thread, at most "
    "128 MiB) unless --chunks is given. With no worker for --no-workers-timeout seconds (300 "
    "by default) the fit stops with exit code 1, keeping its checkpoint.\n\n"
    "--config FILE reads a TOML file of the same option names (data, out, n-components or "
    "n_components, ...); relative paths in it are relative to the file. Precedence: command "
    "line, then environment, then config file, then defaults."
)


@app.command(help=FIT_HELP, epilog=EXIT_CODES_HELP)
def fit(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Argument(
        metavar="DATA", help="Training data: Zarr (store.zarr or store.zarr::array), Parquet, .npy.",
        show_default=False)] = None,
    out: Annotated[Optional[str], typer.Option(
        "--out", "-o", metavar="MODEL", help="Where to write the model (.npz). Required.",
        rich_help_panel=OUTPUT)] = None,
    n_components: Annotated[int, typer.Option(
        "--n-components", "-k", min=1, metavar="K", help="Number of mixture components.")] = 1,
    covariance_type: Annotated[CovarianceType, typer.Option(
        "--covariance-type", help="Covariance parameterisation: scikit-learn's full, tied, diag, "
                                  "spherical or one of mclust's 14 models (EII ... VVV).",
    )] = CovarianceType["full"],
    max_iter: MaxIterOpt = 100,
    tol: Annotated[float, typer.Option(
        "--tol", min=0.0, help="Convergence threshold on the change of the mean log-likelihood.")] = 1e-3,
    n_init: Annotated[int, typer.Option("--n-init", min=1, help="Initialisations; the best is kept.")] = 1,
    init_params: InitParamsOpt = InitParams.auto,
    random_state: Annotated[Optional[int], typer.Option(
        "--random-state", min=0, max=2**32 - 1, help="Seed, for reproducible fits.")] = None,
    reg_covar: RegCovarOpt = 1e-6,
    missing: MissingOpt = MissingMode.raise_,
    acceleration: AccelerationOpt = Acceleration.auto,
    bayesian: Annotated[bool, typer.Option(
        "--bayesian", help="Fit scikit-learn's BayesianGaussianMixture (variational inference): "
                           "the prior switches off the components the data do not need.",
        rich_help_panel=BAYESIAN)] = False,
    weight_concentration_prior_type: Annotated[PriorType, typer.Option(
        "--weight-concentration-prior-type", help="Prior on the weights (with --bayesian).",
        rich_help_panel=BAYESIAN)] = PriorType.dirichlet_process,
    weight_concentration_prior: Annotated[Optional[float], typer.Option(
        "--weight-concentration-prior", metavar="GAMMA",
        help="Concentration of the weights' prior (with --bayesian; default 1/K). Small values "
             "switch more components off.", rich_help_panel=BAYESIAN)] = None,
    columns: ColumnsOpt = None,
    chunks: ChunksOpt = None,
    weight_column: WeightColumnOpt = None,
    weights: WeightsOpt = None,
    cache: CacheOpt = CacheMode.auto,
    checkpoint: Annotated[Optional[str], typer.Option(
        "--checkpoint", metavar="DIR", help="Directory for the checkpoint of the running fit.",
        rich_help_panel="Checkpoint")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the fit saved in --checkpoint (refused if its options or data "
                         "differ).", rich_help_panel="Checkpoint")] = False,
    config: Annotated[Optional[str], typer.Option(
        "--config", metavar="FILE", is_eager=True, callback=_load_config,
        help="TOML file of option values (for scheduled runs); command-line flags override it.")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit with code 3 (and write no model) if the fit does not converge.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing model file (and start over an existing checkpoint).",
        rich_help_panel=OUTPUT)] = False,
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
    reporter = _reporter("fit", quiet, log_json)
    if data is None:
        raise BadInput("missing DATA: give the training data path (or `data` in the --config file)")
    if out is None:
        raise BadInput("missing --out MODEL: where to write the fitted model")
    if resume and not checkpoint:
        raise BadInput("--resume needs --checkpoint DIR")
    cluster = ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker,
                             memory_limit, processes, dashboard,
                             no_workers_timeout=no_workers_timeout)
    cluster.check()
    params = dict(
        n_components=n_components,
        covariance_type=covariance_type.value,
        tol=float(tol),
        reg_covar=float(reg_covar),
        max_iter=max_iter,
        n_init=n_init,
        init_params=init_params.value,
        random_state=random_state,
    )
    if missing != MissingMode.raise_:  # (left out otherwise: checkpoints of earlier fits resume)
        if bayesian:
            raise BadInput("--missing takes a Gaussian mixture: the Bayesian mixture has no missing values")
        params["missing"] = missing.value
    if acceleration is not Acceleration.auto:  # (left out otherwise, as --missing)
        if bayesian:
            raise BadInput("--acceleration takes a Gaussian mixture: the Bayesian mixture's "
                           "variational steps are not accelerated")
        params["acceleration"] = acceleration_value(acceleration)
    if bayesian:
        params.update(weight_concentration_prior_type=weight_concentration_prior_type.value,
                      weight_concentration_prior=weight_concentration_prior)
    elif weight_concentration_prior is not None:
        raise BadInput("--weight-concentration-prior needs --bayesian")
    _run_fit(reporter, data, out, params, parse_columns(columns), chunks, cache_value(cache),
             checkpoint, resume, strict, overwrite, cluster, (weight_column, weights))


def _run_fit(reporter: Reporter, data: str, out: str, params: dict[str, Any],
             columns: Optional[list[str]], chunks: Optional[int], cache: Union[bool, str],
             checkpoint: Optional[str], resume: bool, strict: bool, overwrite: bool,
             cluster: ClusterOptions,
             weight_options: tuple[Optional[str], Optional[str]] = (None, None)) -> None:
    import numpy as np

    from .. import _checkpoint

    _check_local(out, "--out (the model file)")
    if checkpoint:
        _check_local(checkpoint, "--checkpoint")
    _check_new_output(out, overwrite, "model")
    if checkpoint and os.path.exists(checkpoint) and not os.path.isdir(checkpoint):
        raise BadInput(f"--checkpoint must be a directory: {checkpoint!r} is a file")
    if checkpoint and _checkpoint.has_checkpoint(checkpoint) and not resume and not overwrite:
        raise BadInput(
            f"{checkpoint!r} already holds the checkpoint of a fit: pass --resume to continue it "
            "or --overwrite to start over"
        )

    saved = None
    if resume and _checkpoint.has_checkpoint(checkpoint):
        with bad_input(ValueError, FileNotFoundError):
            saved = _checkpoint.load_checkpoint(checkpoint)
    # how to read: --chunks, else as the interrupted fit did, else read()'s rule in the cluster
    saved_chunking = saved.data.get("chunking") if saved is not None else None
    if chunks is not None:
        read_chunks, chunk_bytes = chunks, None
    elif saved_chunking is not None:
        read_chunks, chunk_bytes = saved_chunking["chunks"], saved_chunking["chunk_bytes"]
    else:  # a new fit (sized in the cluster below), or a checkpoint of daskem 0.1
        read_chunks, chunk_bytes = None, (LEGACY_CHUNK_BYTES if saved is not None else None)
    X, sample_weight, columns = read_weighted_data(data, columns, read_chunks, *weight_options,
                                                   chunk_bytes=chunk_bytes)
    if X.shape[0] < params["n_components"]:
        raise BadInput(
            f"the data have {X.shape[0]} row(s), fewer than --n-components {params['n_components']}"
        )
    fingerprint = data_fingerprint(data, X, columns)
    if any(weight_options):
        fingerprint.update(weights_fingerprint(*weight_options))

    # imported only now: scikit-learn is slow to import, and bad data fail faster without it
    if "weight_concentration_prior_type" in params:
        from ..bayesian_mixture import BayesianGaussianMixture as Estimator
    else:
        from ..gaussian_mixture import GaussianMixture as Estimator

    est = Estimator(**params, cache=cache)
    with bad_input(ValueError, TypeError):
        est._validate_params()

    state = None
    if saved is not None:
        saved_data = {k: v for k, v in saved.data.items() if k != "chunking"}
        # older checkpoints hold no signature of a weights file: not checkable
        current = {k: v for k, v in fingerprint.items() if k != "weight_files" or k in saved_data}
        diffs = _checkpoint.differences(saved.options, params) + [
            "data " + d for d in _checkpoint.differences(saved_data, current)
        ]
        if diffs:
            raise BadInput(
                f"cannot resume from {checkpoint!r}: it was written by a different fit ("
                + "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
                + "); use the original options and data, or --overwrite to start over"
            )
        state = saved.state
    elif resume:
        reporter.event("checkpoint", f"no checkpoint in {checkpoint}: starting a new fit",
                       checkpoint=checkpoint, resumed=False)

    reporter.event(
        "start",
        f"fitting {params['n_components']} {params['covariance_type']} component(s)"
        + (" (variational)" if "weight_concentration_prior_type" in params else "") + f" to {data} "
        f"({X.shape[0]} rows x {X.shape[1]} features, {X.dtype})",
        data=fingerprint["source"], shape=list(X.shape), dtype=str(X.dtype),
        options=params, out=out, checkpoint=checkpoint,
    )
    reporter.begin_fit(params["n_init"], params["max_iter"])

    def save_state(s):
        _checkpoint.save_checkpoint(checkpoint, s, params, fingerprint)

    started = time.perf_counter()
    with _warnings_to(reporter), dask_client(cluster, reporter):
        if read_chunks is None and chunk_bytes is None:
            from ..io import auto_chunk_bytes

            chunk_bytes, why = auto_chunk_bytes()
            why = f"by read()'s rule, {why}"
        else:
            why = ("as the interrupted fit did" if chunks is None
                   else f"by --chunks {chunks}")
        # read again in the cluster: its workers size the chunks, too large ones are warned about
        X, sample_weight, columns = read_weighted_data(data, columns, read_chunks, *weight_options,
                                                       chunk_bytes=chunk_bytes)
        fingerprint = data_fingerprint(data, X, columns)
        if any(weight_options):
            fingerprint.update(weights_fingerprint(*weight_options))
        if saved is not None and fingerprint["row_chunks"] != saved.data.get("row_chunks"):
            raise BadInput(f"cannot resume from {checkpoint!r}: the data's row chunks differ from "
                           "the interrupted fit's; use the original --chunks, or --overwrite")
        X, fit_cache, chunking = fit_chunking(X, cache, read_chunks, chunk_bytes, saved_chunking)
        if saved is None or saved_chunking is not None:
            fingerprint["chunking"] = chunking  # kept in every checkpoint, for --resume
        est.set_params(cache=fit_cache)
        sizes = sorted({int(n) for n in X.chunks[0]})
        reporter.event(
            "chunks", f"{len(X.chunks[0])} row chunk(s) of {sizes[-1]} rows "
                      f"({format_bytes(sizes[-1] * X.shape[1] * X.dtype.itemsize)}) at most, sized {why}"
                      + ("; persisted in the workers' memory" if chunking["persisted"] else ""),
            chunks=len(X.chunks[0]), rows=sizes[-1], persisted=chunking["persisted"],
        )
        if state is not None:
            reporter.event(
                "resume",
                f"resuming from {checkpoint}: initialisation {state.init + 1}, "
                f"after iteration {len(state.seconds)}",
                checkpoint=checkpoint, init=state.init, iteration=len(state.seconds),
            )
            reporter.on_init(state.init, done=len(state.seconds),
                             lower_bound=state.lower_bound if state.lower_bounds else None)
        with bad_input(ValueError):
            fit_with_progress(est, X, reporter, sample_weight=sample_weight, resume=state,
                              save_state=save_state if checkpoint else None)
    seconds = time.perf_counter() - started

    if params["max_iter"] > 0 and not est.converged_:
        message = (
            f"the fit did not converge in {est.n_iter_} iteration(s) (change of the lower bound "
            f"still >= tol {params['tol']}); increase --max-iter or --tol"
        )
        reporter.event("not_converged", message, n_iter=est.n_iter_, n_passes=est.n_passes_,
                       lower_bound=_json_number(est.lower_bound_))
        if strict:
            raise NotConverged(message + "; no model written (--strict)")
    else:
        reporter.event(
            "converged", f"converged after {est.n_iter_} iteration(s) ({est.n_passes_} passes over "
                         f"the data), lower bound {_fmt(est.lower_bound_, '.6f')}",
            n_iter=est.n_iter_, n_passes=est.n_passes_, lower_bound=_json_number(est.lower_bound_),
        )

    names = feature_columns(data, columns)
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    _check_new_output(out, overwrite, "model")
    est.save(out, data=fingerprint, fit={**params, "cache": cache, "chunks": chunks},
             command="daskem fit")
    if checkpoint:
        _remove_checkpoint(checkpoint)
    reporter.event("finished", f"model written to {out} ({seconds:.1f} s)", out=out,
                   seconds=round(seconds, 3), n_iter=est.n_iter_, n_passes=est.n_passes_,
                   converged=bool(est.converged_), lower_bound=_json_number(est.lower_bound_))
    if reporter.mode in ("plain", "rich"):
        print_model_summary(est, out, terminal=_isatty(sys.stdout), n_rows=X.shape[0])


SELECT_HELP = (
    "Fit a grid of mixtures (component counts x covariance types) in shared passes over DATA, "
    "print their log-likelihood, BIC and AIC, and write the best model to --out.\n\n"
    "Each pass over the data serves every candidate still running, so the grid reads the "
    "data about as often as its longest fit."
)


@app.command(help=SELECT_HELP, epilog=EXIT_CODES_HELP)
def select(
    data: Annotated[str, typer.Argument(metavar="DATA", help="Training data (Zarr, Parquet, .npy).")],
    out: Annotated[str, typer.Option(
        "--out", "-o", metavar="MODEL", help="Where to write the best model (.npz).",
        rich_help_panel=OUTPUT)],
    n_components: Annotated[str, typer.Option(
        "--n-components", "-k", metavar="RANGE", help="Component counts: 1-10 or 2,4,8.")] = "1-10",
    covariance_type: Annotated[str, typer.Option(
        "--covariance-type", metavar="TYPES",
        help="Comma-separated covariance types (scikit-learn's or mclust's names), or all "
             "(mclust's 14 models).")] = "full,tied,diag,spherical",
    criterion: Annotated[str, typer.Option(
        "--criterion", help="bic, aic or icl (scikit-learn's sign: lower is better).")] = "bic",
    max_iter: MaxIterOpt = 100,
    tol: Annotated[float, typer.Option("--tol", min=0.0, help="Convergence threshold.")] = 1e-3,
    n_init: Annotated[int, typer.Option("--n-init", min=1, help="Restarts per candidate.")] = 1,
    init_params: InitParamsOpt = InitParams.auto,
    random_state: Annotated[Optional[int], typer.Option(
        "--random-state", min=0, max=2**32 - 1, help="Seed of every candidate.")] = None,
    reg_covar: RegCovarOpt = 1e-6,
    missing: MissingOpt = MissingMode.raise_,
    acceleration: AccelerationOpt = Acceleration.auto,
    columns: ColumnsOpt = None,
    chunks: ChunksOpt = None,
    weight_column: WeightColumnOpt = None,
    weights: WeightsOpt = None,
    cache: CacheOpt = CacheMode.auto,
    plot: Annotated[Optional[str], typer.Option(
        "--plot", metavar="FIG.png", help="Also draw the criterion against K per covariance type.",
        rich_help_panel=OUTPUT)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON records.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing model file or plot.", rich_help_panel=OUTPUT)] = False,
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
    import numpy as np

    reporter = _reporter("select", quiet, log_json)
    ks = parse_components(n_components)
    types = [t.strip() for t in covariance_type.split(",") if t.strip()]
    if types == ["all"]:  # mclust's fourteen models
        types = list(COVARIANCE_NAMES[4:])
    unknown = [t for t in types if t not in COVARIANCE_NAMES]
    if not types or unknown:
        raise BadInput(f"invalid --covariance-type {covariance_type!r}: use full, tied, diag, spherical, "
                       "mclust's names (EII, VII, EEI, VEI, EVI, VVI, EEE, VEE, EVE, VVE, EEV, VEV, "
                       "EVV, VVV) or all")
    if criterion not in ("bic", "aic", "icl"):
        raise BadInput(f"invalid --criterion {criterion!r}: use bic, aic or icl")
    cluster = ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker,
                             memory_limit, processes, dashboard,
                             no_workers_timeout=no_workers_timeout)
    cluster.check()
    _check_local(out, "--out (the model file)")
    _check_new_output(out, overwrite, "model")
    if plot:
        _check_local(plot, "--plot")
        _check_new_output(plot, overwrite, "plot")
    columns = parse_columns(columns)
    X, sample_weight, columns = read_weighted_data(data, columns, chunks, weight_column, weights)
    if X.shape[0] < max(ks):
        raise BadInput(f"the data have {X.shape[0]} row(s), fewer than {max(ks)} components")
    fingerprint = data_fingerprint(data, X, columns)
    from ..selection import select_model

    options = dict(max_iter=max_iter, tol=float(tol), n_init=n_init, init_params=init_params.value,
                   reg_covar=float(reg_covar), cache=cache_value(cache), missing=missing.value,
                   acceleration=acceleration_value(acceleration))
    reporter.event(
        "start", f"selecting among {len(ks) * len(types)} candidates on {data} "
                 f"({X.shape[0]} rows x {X.shape[1]} features)",
        candidates=len(ks) * len(types), shape=list(X.shape),
    )
    started = time.perf_counter()
    with _warnings_to(reporter), dask_client(cluster, reporter), bad_input(ValueError):
        # read again, chunked for the cluster's workers
        X, sample_weight, columns = read_weighted_data(data, columns, chunks, weight_column, weights)
        fingerprint = data_fingerprint(data, X, columns)
        table, best = select_model(X, ks, types, criterion=criterion, sample_weight=sample_weight,
                                   random_state=random_state, **options)
    seconds = time.perf_counter() - started
    names = feature_columns(data, columns)
    if names is not None:
        best.feature_names_in_ = np.asarray(names, dtype=object)
    png = None
    if plot:
        from ..plotting import figure_png, plot_selection, save_png

        # rendered before the model is written: a failure leaves neither file
        png = figure_png(plot_selection(table, criterion))
    best.save(out, data=fingerprint, command="daskem select",
              fit={**best.get_params(), "criterion": criterion, "random_state": random_state})
    if png is not None:
        save_png(png, plot)
    reporter.event("finished", f"best: {best.n_components} {best.covariance_type} component(s); "
                               f"model written to {out} ({seconds:.1f} s)",
                   out=out, n_components=int(best.n_components),
                   covariance_type=best.covariance_type, seconds=round(seconds, 3))
    if as_json:
        records = [_json_fields(row) for row in table.astype(object).to_dict(orient="records")]
        print(json.dumps(records))
    else:
        print(table.drop(columns=["error"] if table["error"].isna().all() else []).to_string(index=False))
