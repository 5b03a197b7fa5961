"""The ``daskem`` command line: fit, predict, score, info, plot and demo.

Every computing command runs on a Dask cluster: ``--scheduler ADDRESS`` (or
the environment variable ``DASK_SCHEDULER_ADDRESS``) or ``--scheduler-file``
connect to an existing one; otherwise a LocalCluster is started on 127.0.0.1
(``--workers``, ``--threads-per-worker``, ``--memory-limit``). The client and
any cluster started are always closed.

Output streams: results (fit summary, scores, model info) go to stdout;
progress and log events go to stderr, as a live display on a terminal, plain
lines otherwise, or one JSON object per line with ``--log-json``.

Exit codes: 0 success; 1 any other failure; 2 bad usage or bad input (one
line on stderr, nothing written); 3 the fit did not converge and ``--strict``
was given; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). A checkpoint
written before an interruption stays, for ``--resume``.
"""

import contextlib
import datetime
import enum
import hashlib
import json
import logging
import math
import os
import sys
import time
import traceback
import warnings
from typing import Annotated, Optional

import typer

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_NOT_CONVERGED = 0, 1, 2, 3

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 any other failure; 2 bad usage or bad input "
    "(one line on stderr, nothing written); 3 no convergence with --strict; "
    "130 interrupted (Ctrl-C); 143 terminated (SIGTERM)."
)
STREAMS_HELP = (
    "Results go to stdout; progress and log events go to stderr (a live display on a "
    "terminal, plain lines otherwise, JSON lines with --log-json)."
)

app = typer.Typer(
    name="daskem",
    help=(
        "Gaussian mixture models fitted by EM over chunked Dask arrays.\n\n"
        + STREAMS_HELP
    ),
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# --------------------------------------------------------------------------
# Errors and exit codes
# --------------------------------------------------------------------------


class CLIError(Exception):
    """An error with a one-line message and an exit code."""

    exit_code = EXIT_FAILURE


class BadInput(CLIError):
    """Bad usage or bad input data: exit code 2."""

    exit_code = EXIT_BAD_INPUT


class NotConverged(CLIError):
    """The fit did not converge and --strict was given: exit code 3."""

    exit_code = EXIT_NOT_CONVERGED


def one_line(text):
    text = " ".join(str(text).split())
    return text or "unknown error"


@contextlib.contextmanager
def bad_input(*types, prefix=""):
    """Turn the given exception types into BadInput (exit 2)."""
    types = types or (ValueError, TypeError, FileNotFoundError)
    try:
        yield
    except BadInput:
        raise
    except types as e:
        message = str(e) or type(e).__name__
        if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in message:
            message = f"{message}: {e.filename}"
        raise BadInput(prefix + message) from e


# --------------------------------------------------------------------------
# Progress and log events
# --------------------------------------------------------------------------


def _json_number(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class Reporter:
    """Progress and log events of one command, on stderr.

    Modes: ``rich`` (a live display, when stderr is a terminal), ``plain``
    (one line per event), ``json`` (one JSON object per line, ``--log-json``)
    and ``quiet`` (only errors).
    """

    def __init__(self, command, quiet=False, log_json=False, stream=None, terminal=None):
        self.command = command
        self.stream = stream if stream is not None else sys.stderr
        if terminal is None:
            terminal = _isatty(self.stream)
        self.terminal = terminal
        self.quiet = quiet
        self.mode = "json" if log_json else "quiet" if quiet else "rich" if terminal else "plain"
        if quiet and log_json:
            self.mode = "json-quiet"
        self.console = None
        self.progress = None
        self.task = None
        self.init = None
        self.n_init = 1
        self.max_iter = None
        self.started = time.perf_counter()

    # -- generic events
    def event(self, name, message, **fields):
        if self.mode == "json":
            self._json(name, message, fields)
        elif self.mode == "plain":
            self._line(message)
        elif self.mode == "rich":
            self._rich_console().print(f"[dim]{_escape(message)}[/dim]", highlight=False)

    def _json(self, name, message, fields):
        record = {
            "event": name,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "command": self.command,
        }
        record.update(fields)
        if message is not None:
            record["message"] = message
        print(json.dumps(record, default=str, allow_nan=False), file=self.stream, flush=True)

    def _line(self, message):
        print(f"daskem {self.command}: {message}", file=self.stream, flush=True)

    def _rich_console(self):
        if self.console is None:
            from rich.console import Console

            self.console = Console(file=self.stream, force_terminal=self.terminal, highlight=False)
        return self.console

    def error(self, message, exit_code):
        """Errors are always reported, on one line."""
        self.close()
        if self.mode in ("json", "json-quiet"):
            self._json("error", one_line(message), {"exit_code": exit_code})
        else:
            print(f"daskem: error: {one_line(message)}", file=self.stream, flush=True)

    # -- fit progress
    def begin_fit(self, n_init, max_iter):
        self.n_init, self.max_iter = n_init, max_iter

    def on_init(self, init, done=0, lower_bound=None):
        self._finish_task()
        self.init = init
        resumed = f", resumed after iteration {done}" if done else ""
        message = f"initialisation {init + 1}/{self.n_init}{resumed}"
        if self.mode == "json":
            self._json("init", message, {"init": init, "n_init": self.n_init, "resumed_at": done})
        elif self.mode == "plain":
            self._line(message)
        elif self.mode == "rich":
            progress = self._rich_progress()
            self.task = progress.add_task(
                f"init {init + 1}/{self.n_init}", total=self.max_iter or None, completed=done,
                ll=_fmt(lower_bound, ".6f") if done else "-", change="-", sec="-",
            )

    def on_iteration(self, n_iter, lower_bound, change, seconds):
        if self.mode == "json":
            self._json("iteration", None, {
                "init": self.init, "iteration": n_iter,
                "log_likelihood": _json_number(lower_bound),
                "change": _json_number(change), "seconds": _json_number(seconds),
            })
        elif self.mode == "plain":
            self._line(
                f"iteration {n_iter:>4}  log-likelihood {lower_bound:.6f}  "
                f"change {_fmt(change, '+.3e')}  {seconds:.3f} s"
            )
        elif self.mode == "rich" and self.task is not None:
            self.progress.update(
                self.task, completed=n_iter, ll=f"{lower_bound:.6f}",
                change=_fmt(change, "+.2e"), sec=f"{seconds:.2f}s",
            )

    def end_fit(self):
        self._finish_task()
        self.close()

    def _rich_progress(self):
        if self.progress is None:
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
            )

            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("log-lik [cyan]{task.fields[ll]}"),
                TextColumn("Δ {task.fields[change]}"),
                TextColumn("{task.fields[sec]}/it"),
                TimeElapsedColumn(),
                console=self._rich_console(),
            )
            self.progress.start()
        return self.progress

    def _finish_task(self):
        """Show a finished initialisation (converged early) as a full bar."""
        if self.progress is not None and self.task is not None:
            task = next(t for t in self.progress.tasks if t.id == self.task)
            if task.completed:
                self.progress.update(self.task, total=task.completed)
            self.task = None

    def close(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _fmt(x, spec):
    if x is None:
        return "-"
    return f"{x:{spec}}" if math.isfinite(x) else str(x)


def _escape(text):
    from rich.markup import escape

    return escape(str(text))


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_REPORTER = None


def _reporter(command, quiet, log_json):
    global _REPORTER
    _REPORTER = Reporter(command, quiet=quiet, log_json=log_json)
    return _REPORTER


@contextlib.contextmanager
def _warnings_to(reporter):
    """Python warnings become events (hidden with --quiet) instead of raw stderr text."""
    from sklearn.exceptions import ConvergenceWarning

    def show(message, category, filename, lineno, file=None, line=None):
        reporter.event("warning", f"warning: {category.__name__}: {one_line(message)}",
                       category=category.__name__)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as a fit event instead
        warnings.showwarning = show
        yield


# --------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------


class ClusterOptions:
    def __init__(self, scheduler=None, scheduler_file=None, workers=None, threads_per_worker=None,
                 memory_limit="auto", processes=True, dashboard=True):
        self.scheduler = scheduler
        self.scheduler_file = scheduler_file
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.memory_limit = memory_limit
        self.processes = processes
        self.dashboard = dashboard

    def check(self):
        """Usage errors, found before anything starts."""
        if self.scheduler and self.scheduler_file:
            raise BadInput("give --scheduler or --scheduler-file, not both")
        if self.scheduler_file and not os.path.isfile(self.scheduler_file):
            raise BadInput(f"scheduler file not found: {self.scheduler_file!r}")
        if self.memory_limit not in (None, "auto"):
            from dask.utils import parse_bytes

            try:
                parse_bytes(self.memory_limit)
            except (ValueError, TypeError):
                raise BadInput(
                    f"invalid --memory-limit {self.memory_limit!r}: use e.g. 4GiB, 2e9 or auto"
                ) from None


@contextlib.contextmanager
def dask_client(options, reporter):
    """A distributed Client for the command; closes it (and its LocalCluster) on exit."""
    import importlib.util

    from distributed import Client, LocalCluster

    from ._passes import check_workers

    options.check()
    cluster = None
    dashboard = False
    if options.scheduler:
        reporter.event("cluster", f"connecting to scheduler {options.scheduler}", scheduler=options.scheduler)
        client = Client(options.scheduler, timeout="30s")
    elif options.scheduler_file:
        reporter.event("cluster", f"connecting to the scheduler in {options.scheduler_file}",
                       scheduler_file=str(options.scheduler_file))
        client = Client(scheduler_file=str(options.scheduler_file), timeout="30s")
    else:
        dashboard = options.dashboard and importlib.util.find_spec("bokeh") is not None
        kwargs = dict(
            n_workers=options.workers,
            threads_per_worker=options.threads_per_worker,
            memory_limit=options.memory_limit if options.memory_limit is not None else "auto",
            processes=options.processes,
            # the scheduler's HTTP server (dashboard or not) on a random local port
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": dashboard},
            silence_logs=logging.CRITICAL,
            host="127.0.0.1",
        )
        if not options.processes:
            kwargs["protocol"] = "tcp://"
        cluster = LocalCluster(**kwargs)
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
        if options.dashboard and not dashboard:
            reporter.event("dashboard", "dashboard disabled: install bokeh>=3.1 to get it", dashboard=None)
    try:
        info = client.scheduler_info()
        n_workers = len(info.get("workers", {}))
        threads = sum(w.get("nthreads", 0) for w in info.get("workers", {}).values())
        where = "local cluster" if cluster is not None else "cluster"
        reporter.event(
            "cluster",
            f"{where} at {client.scheduler.address}: {n_workers} worker(s), {threads} thread(s)",
            scheduler=client.scheduler.address, workers=n_workers, threads=threads,
        )
        if cluster is None:
            # a worker without daskem would die on its first task, and the command wait forever
            check_workers(client)
        link = _dashboard_link(client) if (cluster is None or dashboard) else None
        if link:
            reporter.event("dashboard", f"dashboard: {link}", dashboard=link)
        yield client
    finally:
        try:
            client.close()
        finally:
            if cluster is not None:
                cluster.close()


def _dashboard_link(client):
    try:
        return client.dashboard_link
    except Exception:
        return None


# --------------------------------------------------------------------------
# Shared options
# --------------------------------------------------------------------------

CLUSTER = "Cluster"
OUTPUT = "Output"
DATA_PANEL = "Data"

SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", envvar="DASK_SCHEDULER_ADDRESS", metavar="ADDRESS",
    help="Address of a running Dask scheduler, e.g. tcp://host:8786 (the data paths must be "
         "readable by its workers). Default: start a local cluster.",
    rich_help_panel=CLUSTER)]
SchedulerFileOpt = Annotated[Optional[str], typer.Option(
    "--scheduler-file", metavar="PATH", help="Scheduler file of a running Dask cluster.",
    rich_help_panel=CLUSTER)]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", min=1, metavar="N",
    help="Workers of the local cluster. Default: chosen by Dask from the cores.",
    rich_help_panel=CLUSTER)]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads-per-worker", min=1, metavar="T", help="Threads per worker of the local cluster.",
    rich_help_panel=CLUSTER)]
MemoryOpt = Annotated[str, typer.Option(
    "--memory-limit", metavar="M", help="Memory limit per local worker, e.g. 4GiB, or auto.",
    rich_help_panel=CLUSTER)]
ProcessesOpt = Annotated[bool, typer.Option(
    "--processes/--no-processes",
    help="Local workers as separate processes, or as threads of this process.",
    rich_help_panel=CLUSTER)]
DashboardOpt = Annotated[bool, typer.Option(
    "--dashboard/--no-dashboard",
    help="Serve the local cluster's dashboard on 127.0.0.1 (random port; needs bokeh).",
    rich_help_panel=CLUSTER)]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress or log events; errors only.", rich_help_panel=OUTPUT)]
LogJsonOpt = Annotated[bool, typer.Option(
    "--log-json",
    help="Log events (start, cluster, init, iteration, converged/not_converged, finished, error) "
         "as one JSON object per line on stderr.",
    rich_help_panel=OUTPUT)]
ColumnsOpt = Annotated[Optional[str], typer.Option(
    "--columns", metavar="A,B", help="Comma-separated columns of a Parquet source (default: all).",
    rich_help_panel=DATA_PANEL)]
ChunksOpt = Annotated[Optional[int], typer.Option(
    "--chunks", min=1, metavar="ROWS", help="Rows per chunk (default: about 128 MiB per chunk).",
    rich_help_panel=DATA_PANEL)]
WeightColumnOpt = Annotated[Optional[str], typer.Option(
    "--weight-column", metavar="NAME",
    help="Parquet column of non-negative row weights (left out of the features).",
    rich_help_panel=DATA_PANEL)]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", metavar="PATH",
    help="Zarr array or .npy file of non-negative row weights, one per row.",
    rich_help_panel=DATA_PANEL)]


def parse_columns(columns):
    if columns is None:
        return None
    if isinstance(columns, (list, tuple)):
        names = [str(c).strip() for c in columns]
    else:
        names = [c.strip() for c in str(columns).split(",")]
    if not names or any(not c for c in names):
        raise BadInput(f"invalid --columns {columns!r}: give comma-separated column names, e.g. a,b")
    if len(set(names)) != len(names):
        raise BadInput(f"invalid --columns {columns!r}: a column is repeated")
    return names


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def read_data(source, columns=None, chunks=None):
    """daskem.io.read with every error it raises turned into BadInput."""
    from .io import read

    with bad_input(ValueError, TypeError, FileNotFoundError):
        return read(source, columns=columns, chunks=chunks)


def read_weighted_data(source, columns, chunks, weight_column=None, weights=None):
    """Features, row weights (or None) and the feature columns used.

    ``weight_column`` names a Parquet column of weights (left out of the
    features); ``weights`` is a Zarr array or .npy file with one weight per row.
    """
    if weight_column and weights:
        raise BadInput("give either --weight-column or --weights, not both")
    if weight_column:
        if columns is None:
            import dask.dataframe as dd

            with bad_input(ValueError, TypeError, FileNotFoundError, OSError):
                columns = [str(c) for c in dd.read_parquet(source).columns]
            if weight_column not in columns:
                raise BadInput(f"--weight-column {weight_column!r} is not a column of {source}")
            columns = [c for c in columns if c != weight_column]
        elif weight_column in columns:
            raise BadInput(f"--weight-column {weight_column!r} is also among --columns")
        X = read_data(source, columns, chunks)
        return X, read_data(source, [weight_column], chunks)[:, 0], columns
    X = read_data(source, columns, chunks)
    if not weights:
        return X, None, columns
    import dask.array as da
    import numpy as np

    path = _local_path(weights) or weights
    if not os.path.exists(path) and "://" not in os.fspath(weights):
        raise BadInput(f"--weights: no such file or directory: {weights!r}")
    with bad_input(ValueError, TypeError, OSError, FileNotFoundError):
        if str(path).endswith(".npy"):
            w = da.from_array(np.load(path, mmap_mode="r"))
        else:
            w = da.from_zarr(weights)
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.ndim != 1 or w.shape[0] != X.shape[0]:
        raise BadInput(
            f"--weights {weights!r} has shape {tuple(w.shape)}; expected one weight per row "
            f"({X.shape[0]},)"
        )
    return X, w, columns


def _local_path(source):
    source = os.fspath(source)
    if source.startswith("file://"):
        source = source[len("file://"):]
    elif "://" in source or source.startswith(("simplecache::", "filecache::")):
        return None
    head, sep, tail = source.rpartition("::")
    if sep and tail and "://" not in tail and not tail.startswith("/"):
        source = head
    return source


def _normalise_source(source):
    source = os.fspath(source)
    path = _local_path(source)
    if path is None:
        return source
    return os.path.abspath(path) + source[len(path):] if source.startswith(path) else source


def _files_signature(path):
    """Count, total size and latest modification of the files of a local source."""
    try:
        if os.path.isfile(path):
            st = os.stat(path)
            return {"files": 1, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
        count = size = latest = 0
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                st = os.stat(os.path.join(root, name))
                count += 1
                size += st.st_size
                latest = max(latest, st.st_mtime_ns)
        return {"files": count, "bytes": size, "mtime_ns": latest}
    except OSError:
        return None


def data_fingerprint(source, X, columns):
    """What identifies the training data: source, columns, shape, dtype, chunking, files."""
    chunks = [int(c) for c in X.chunks[0]]
    fp = {
        "source": _normalise_source(source),
        "columns": columns,
        "shape": [int(n) for n in X.shape],
        "dtype": str(X.dtype),
        "row_chunks": {
            "count": len(chunks),
            "sha256": hashlib.sha256(json.dumps(chunks).encode()).hexdigest(),
        },
    }
    path = _local_path(source)
    if path is not None:
        sig = _files_signature(path)
        if sig is not None:
            fp["files"] = sig
    return fp


def check_features(est, X, model_path):
    if X.shape[1] != est.n_features_in_:
        hint = ""
        names = getattr(est, "feature_names_in_", None)
        if names is not None:
            hint = f"; it was fitted on columns {','.join(map(str, names))} (pass --columns)"
        raise BadInput(
            f"the data have {X.shape[1]} feature(s) but the model {model_path} expects "
            f"{est.n_features_in_}{hint}"
        )


def load_model_file(path):
    from .persistence import load_model

    with bad_input(ValueError, FileNotFoundError):
        return load_model(path)


def _check_local(path, what):
    if "://" in os.fspath(path) or "::" in os.fspath(path):
        raise BadInput(f"{what} must be a local path (or a mounted filesystem), got {os.fspath(path)!r}")


def _check_new_output(path, overwrite, what="output"):
    path = os.fspath(path)
    if os.path.lexists(path) and not overwrite:
        raise BadInput(f"{what} already exists: {path!r} (pass --overwrite to replace it)")
    if os.path.isdir(path) and what == "model":
        raise BadInput(f"{what} path is a directory: {path!r}")


def _temp_siblings(path):
    """Hidden temporary siblings the atomic writers make for ``path`` (never ``.old-`` ones,
    which may hold a previous output being replaced)."""
    local = _local_path(os.fspath(path))
    if local is None:
        return set()
    parent, base = os.path.split(os.path.abspath(local.rstrip("/")))
    try:
        return {
            os.path.join(parent, n) for n in os.listdir(parent)
            if n.startswith(f".{base}.tmp-")
        }
    except OSError:
        return set()


def _remove_new_temp_siblings(path, before):
    """Remove writer temporaries that failed tasks on a cluster may have recreated."""
    import shutil

    for p in _temp_siblings(path) - before:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(p)


# --------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------


class CovarianceType(str, enum.Enum):
    full = "full"
    tied = "tied"
    diag = "diag"
    spherical = "spherical"


class InitParams(str, enum.Enum):
    kmeans_parallel = "k-means||"
    kmeans = "kmeans"
    kmeans_pp = "k-means++"
    random = "random"
    random_from_data = "random_from_data"


class CacheMode(str, enum.Enum):
    auto = "auto"
    true = "true"
    false = "false"


_PATH_KEYS = ("data", "out", "checkpoint", "scheduler_file")


def _load_config(ctx: typer.Context, param: typer.CallbackParam, value: Optional[str]):
    """Eager --config callback: the TOML file becomes the command's default values."""
    if not value:
        return value
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise typer.BadParameter(
                "reading TOML needs Python >= 3.11 or the 'tomli' package (pip install tomli)"
            ) from None
    try:
        with open(value, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise typer.BadParameter(f"config file not found: {value!r}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise typer.BadParameter(f"cannot read config file {value!r}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise typer.BadParameter(f"invalid TOML in {value!r}: {e}") from None
    if isinstance(raw.get("fit"), dict) and len(raw) == 1:
        raw = raw["fit"]  # a [fit] table is accepted too
    names = {p.name for p in ctx.command.params if p.name != "config"}
    base = os.path.dirname(os.path.abspath(value))
    defaults = {}
    for key, item in raw.items():
        name = key.replace("-", "_")
        if name not in names:
            raise typer.BadParameter(
                f"unknown option {key!r} in {value!r}; known: "
                + ", ".join(sorted(n.replace("_", "-") for n in names))
            )
        if isinstance(item, dict):
            raise typer.BadParameter(f"option {key!r} in {value!r} must be a value, not a table")
        if name == "columns" and isinstance(item, list):
            item = ",".join(str(c) for c in item)
        elif isinstance(item, list):
            raise typer.BadParameter(f"option {key!r} in {value!r} must be a single value")
        if name == "cache" and isinstance(item, bool):
            item = "true" if item else "false"
        if name in _PATH_KEYS and isinstance(item, str) and _local_path(item) is not None:
            # relative paths in a config file are relative to the file
            if not os.path.isabs(_local_path(item)) and not item.startswith("file://"):
                item = os.path.join(base, item)
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


FIT_HELP = (
    "Fit a Gaussian mixture to DATA (Zarr, Parquet or .npy; local path or fsspec URL) and "
    "write the model to --out (a .npz file, no pickle).\n\n"
    "With --checkpoint DIR the whole EM state is saved atomically after every iteration; "
    "after a crash, the same command with --resume continues from it (same result, bit for "
    "bit, for the same data and chunking). The checkpoint is removed once the model is "
    "written; --resume without a checkpoint starts a new fit.\n\n"
    "--config FILE reads a TOML file of the same option names (data, out, n-components or "
    "n_components, ...); relative paths in it are relative to the file. Precedence: command "
    "line, then environment, then config file, then defaults."
)


MaxIterOpt = Annotated[int, typer.Option("--max-iter", min=0, help="EM iterations at most.")]
InitParamsOpt = Annotated[InitParams, typer.Option("--init-params", help="Initialisation method.")]
RegCovarOpt = Annotated[float, typer.Option(
    "--reg-covar", min=0.0, help="Added to the covariance diagonals.")]
CacheOpt = Annotated[CacheMode, typer.Option(
    "--cache", help="Keep the data in cluster memory during the fit (auto: when it fits).",
    rich_help_panel=DATA_PANEL)]


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
        "--covariance-type", help="Covariance parameterisation.")] = CovarianceType.full,
    max_iter: MaxIterOpt = 100,
    tol: Annotated[float, typer.Option(
        "--tol", min=0.0, help="Convergence threshold on the change of the mean log-likelihood.")] = 1e-3,
    n_init: Annotated[int, typer.Option("--n-init", min=1, help="Initialisations; the best is kept.")] = 1,
    init_params: InitParamsOpt = InitParams.kmeans_parallel,
    random_state: Annotated[Optional[int], typer.Option(
        "--random-state", min=0, max=2**32 - 1, help="Seed, for reproducible fits.")] = None,
    reg_covar: RegCovarOpt = 1e-6,
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
                             memory_limit, processes, dashboard)
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
    cache_value = {"auto": "auto", "true": True, "false": False}[cache.value]
    _run_fit(reporter, data, out, params, parse_columns(columns), chunks, cache_value,
             checkpoint, resume, strict, overwrite, cluster, (weight_column, weights))


def _run_fit(reporter, data, out, params, columns, chunks, cache, checkpoint, resume, strict,
             overwrite, cluster, weight_options=(None, None)):
    import numpy as np

    from . import _checkpoint

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

    X, sample_weight, columns = read_weighted_data(data, columns, chunks, *weight_options)
    if X.shape[0] < params["n_components"]:
        raise BadInput(
            f"the data have {X.shape[0]} row(s), fewer than --n-components {params['n_components']}"
        )
    fingerprint = data_fingerprint(data, X, columns)
    if any(weight_options):
        fingerprint["weights"] = weight_options[0] or _normalise_source(weight_options[1])

    # imported only now: scikit-learn is slow to import, and bad data fail faster without it
    from .gaussian_mixture import GaussianMixture

    est = GaussianMixture(**params, cache=cache)
    with bad_input(ValueError, TypeError):
        est._validate_params()

    state = None
    if resume and _checkpoint.has_checkpoint(checkpoint):
        with bad_input(ValueError, FileNotFoundError):
            saved = _checkpoint.load_checkpoint(checkpoint)
        diffs = _checkpoint.differences(saved.options, params) + [
            "data " + d for d in _checkpoint.differences(saved.data, fingerprint)
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
        f"fitting {params['n_components']} {params['covariance_type']} component(s) to {data} "
        f"({X.shape[0]} rows x {X.shape[1]} features, {X.dtype}, {len(X.chunks[0])} chunk(s))",
        data=fingerprint["source"], shape=list(X.shape), dtype=str(X.dtype),
        chunks=len(X.chunks[0]), options=params, out=out, checkpoint=checkpoint,
    )
    reporter.begin_fit(params["n_init"], params["max_iter"])

    def on_state(s):
        if not s.lower_bounds:
            reporter.on_init(s.init)
        if checkpoint:
            _checkpoint.save_checkpoint(checkpoint, s, params, fingerprint)

    def on_iteration(n_iter, lower_bound, change, parameters, seconds):
        reporter.on_iteration(n_iter, lower_bound, change, seconds)

    started = time.perf_counter()
    with _warnings_to(reporter), dask_client(cluster, reporter):
        if state is not None:
            reporter.event(
                "resume",
                f"resuming from {checkpoint}: initialisation {state.init + 1}, "
                f"after iteration {len(state.lower_bounds)}",
                checkpoint=checkpoint, init=state.init, iteration=len(state.lower_bounds),
            )
            reporter.on_init(state.init, done=len(state.lower_bounds),
                             lower_bound=state.lower_bound if state.lower_bounds else None)
        try:
            with bad_input(ValueError):
                est._fit(X, sample_weight=sample_weight, on_iteration=on_iteration,
                         on_state=on_state, resume=state)
        finally:
            reporter.end_fit()
    seconds = time.perf_counter() - started

    if params["max_iter"] > 0 and not est.converged_:
        message = (
            f"the fit did not converge in {est.n_iter_} iteration(s) (change of the mean "
            f"log-likelihood still >= tol {params['tol']}); increase --max-iter or --tol"
        )
        reporter.event("not_converged", message, n_iter=est.n_iter_,
                       lower_bound=_json_number(est.lower_bound_))
        if strict:
            raise NotConverged(message + "; no model written (--strict)")
    else:
        reporter.event(
            "converged", f"converged after {est.n_iter_} iteration(s), lower bound "
                         f"{_fmt(est.lower_bound_, '.6f')}",
            n_iter=est.n_iter_, lower_bound=_json_number(est.lower_bound_),
        )

    if columns is not None:
        est.feature_names_in_ = np.asarray(columns, dtype=object)
    _check_new_output(out, overwrite, "model")
    est.save(out, data=fingerprint, fit={**params, "cache": cache, "chunks": chunks},
             command="daskem fit")
    if checkpoint:
        _remove_checkpoint(checkpoint)
    reporter.event("finished", f"model written to {out} ({seconds:.1f} s)", out=out,
                   seconds=round(seconds, 3), n_iter=est.n_iter_, converged=bool(est.converged_),
                   lower_bound=_json_number(est.lower_bound_))
    if reporter.mode in ("plain", "rich"):
        print_model_summary(est, out, terminal=_isatty(sys.stdout), n_rows=X.shape[0])


def parse_components(text):
    """'1-10', '2,4,8' or '3' -> sorted list of component counts."""
    counts = set()
    try:
        for part in str(text).split(","):
            lo, sep, hi = part.strip().partition("-")
            counts.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise BadInput(f"invalid --n-components {text!r}: give e.g. 1-10 or 2,4,8") from None
    if not counts or min(counts) < 1:
        raise BadInput(f"invalid --n-components {text!r}: counts must be positive")
    return sorted(counts)


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
        help="Comma-separated covariance types.")] = "full,tied,diag,spherical",
    criterion: Annotated[str, typer.Option("--criterion", help="bic or aic (lower is better).")] = "bic",
    max_iter: MaxIterOpt = 100,
    tol: Annotated[float, typer.Option("--tol", min=0.0, help="Convergence threshold.")] = 1e-3,
    n_init: Annotated[int, typer.Option("--n-init", min=1, help="Restarts per candidate.")] = 1,
    init_params: InitParamsOpt = InitParams.kmeans_parallel,
    random_state: Annotated[Optional[int], typer.Option(
        "--random-state", min=0, max=2**32 - 1, help="Seed of every candidate.")] = None,
    reg_covar: RegCovarOpt = 1e-6,
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
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    import numpy as np

    reporter = _reporter("select", quiet, log_json)
    ks = parse_components(n_components)
    types = [t.strip() for t in covariance_type.split(",") if t.strip()]
    unknown = [t for t in types if t not in {c.value for c in CovarianceType}]
    if not types or unknown:
        raise BadInput(f"invalid --covariance-type {covariance_type!r}: use full, tied, diag, spherical")
    if criterion not in ("bic", "aic"):
        raise BadInput(f"invalid --criterion {criterion!r}: use bic or aic")
    cluster = ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker,
                             memory_limit, processes, dashboard)
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
    from .selection import select_model

    options = dict(max_iter=max_iter, tol=float(tol), n_init=n_init, init_params=init_params.value,
                   reg_covar=float(reg_covar),
                   cache={"auto": "auto", "true": True, "false": False}[cache.value])
    reporter.event(
        "start", f"selecting among {len(ks) * len(types)} candidates on {data} "
                 f"({X.shape[0]} rows x {X.shape[1]} features)",
        candidates=len(ks) * len(types), shape=list(X.shape),
    )
    started = time.perf_counter()
    with _warnings_to(reporter), dask_client(cluster, reporter), bad_input(ValueError):
        table, best = select_model(X, ks, types, criterion=criterion, sample_weight=sample_weight,
                                   random_state=random_state, **options)
    seconds = time.perf_counter() - started
    if columns is not None:
        best.feature_names_in_ = np.asarray(columns, dtype=object)
    best.save(out, data=fingerprint, command="daskem select",
              fit={**best.get_params(), "criterion": criterion, "random_state": random_state})
    if plot:
        from .plotting import plot_selection, save_figure

        save_figure(plot_selection(table, criterion), plot)
    reporter.event("finished", f"best: {best.n_components} {best.covariance_type} component(s); "
                               f"model written to {out} ({seconds:.1f} s)",
                   out=out, n_components=int(best.n_components),
                   covariance_type=best.covariance_type, seconds=round(seconds, 3))
    if as_json:
        records = [
            {k: (_json_number(v) if isinstance(v, float) else v) for k, v in row.items()}
            for row in table.astype(object).to_dict(orient="records")
        ]
        print(json.dumps(records))
    else:
        print(table.drop(columns=["error"] if table["error"].isna().all() else []).to_string(index=False))


def _remove_checkpoint(directory):
    from ._checkpoint import checkpoint_file

    with contextlib.suppress(FileNotFoundError):
        os.remove(checkpoint_file(directory))
    with contextlib.suppress(OSError):
        os.rmdir(directory)  # only if now empty


# --------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------


def _model_rows(est, max_features=6):
    import numpy as np

    rows = []
    order = np.argsort(-est.weights_)
    for k in order:
        mean = est.means_[k]
        shown = ", ".join(f"{v:.4g}" for v in mean[:max_features])
        if len(mean) > max_features:
            shown += ", ..."
        rows.append((str(k), f"{est.weights_[k]:.4f}", f"[{shown}]"))
    return rows


def print_model_summary(est, title, terminal=False, n_rows=None, stream=None):
    stream = stream if stream is not None else sys.stdout
    status = "converged" if est.converged_ else "did not converge"
    head = (
        f"{est.n_components} {est.covariance_type} component(s), {est.n_features_in_} feature(s); "
        f"{status} after {est.n_iter_} iteration(s); lower bound {_fmt(est.lower_bound_, '.6f')}"
        + (f"; {n_rows} rows" if n_rows is not None else "")
    )
    rows = _model_rows(est)
    if terminal:
        from rich.console import Console
        from rich.table import Table

        console = Console(file=stream, highlight=False)
        console.print(f"[bold]{_escape(title)}[/bold]: {_escape(head)}")
        table = Table()
        table.add_column("component", justify="right")
        table.add_column("weight", justify="right")
        table.add_column("mean")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        print(f"{title}: {head}", file=stream)
        print(f"{'component':>9}  {'weight':>8}  mean", file=stream)
        for k, w, m in rows:
            print(f"{k:>9}  {w:>8}  {m}", file=stream)
    stream.flush()


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
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    """Label DATA with the most probable component (or write probabilities or log-likelihoods).

    The output is written atomically: on failure nothing is left at --out.
    """
    reporter = _reporter("predict", quiet, log_json)
    if proba and score_samples:
        raise BadInput("give at most one of --proba and --score-samples")
    cluster = ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker,
                             memory_limit, processes, dashboard)
    cluster.check()
    ext = os.path.splitext(out.rstrip("/"))[1].lower()
    fmt = {".zarr": "zarr", ".parquet": "parquet", ".pq": "parquet"}.get(ext)
    if fmt is None:
        raise BadInput(f"cannot tell the output format of {out!r}: use a .zarr, .parquet or .pq path")
    _check_new_output(out, overwrite)
    est = load_model_file(model)
    X = read_data(data, parse_columns(columns), chunks)
    check_features(est, X, model)
    what = "probabilities" if proba else "log-likelihoods" if score_samples else "labels"
    reporter.event("start", f"writing {what} of {X.shape[0]} rows of {data} to {out}",
                   model=model, data=data, out=out, output=what, shape=list(X.shape))
    kwargs = {"overwrite": overwrite}
    if fmt == "parquet":
        if proba:
            kwargs["columns"] = [f"p{k}" for k in range(est.n_components)]
        else:
            kwargs["columns"] = ["log_likelihood" if score_samples else "label"]
    before = _temp_siblings(out)
    started = time.perf_counter()
    try:
        with _warnings_to(reporter), dask_client(cluster, reporter):
            from .io import write_output

            with bad_input(ValueError):
                result = (est.predict_proba(X) if proba
                          else est.score_samples(X) if score_samples else est.predict(X))
            with bad_input(ValueError, FileExistsError):
                write_output(result, out, format=fmt, **kwargs)
    except BaseException:
        _remove_new_temp_siblings(out, before)
        raise
    reporter.event("finished", f"{what} written to {out} ({time.perf_counter() - started:.1f} s)",
                   out=out, seconds=round(time.perf_counter() - started, 3))


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
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    """Print the mean log-likelihood of DATA under MODEL, with BIC and AIC (one pass)."""
    reporter = _reporter("score", quiet, log_json)
    cluster = ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker,
                             memory_limit, processes, dashboard)
    cluster.check()
    est = load_model_file(model)
    X = read_data(data, parse_columns(columns), chunks)
    check_features(est, X, model)
    with _warnings_to(reporter), dask_client(cluster, reporter):
        with bad_input(ValueError):
            mean = float(est.score_samples(X).mean().compute())
    n = int(X.shape[0])
    p = int(est._n_parameters())
    result = {
        "model": model,
        "data": data,
        "n_samples": n,
        "n_features": int(X.shape[1]),
        "n_parameters": p,
        "mean_log_likelihood": mean,
        "bic": -2 * mean * n + p * math.log(n),
        "aic": -2 * mean * n + 2 * p,
    }
    reporter.event("finished", "scored", **{k: _json_number(v) if isinstance(v, float) else v
                                             for k, v in result.items()})
    if as_json:
        print(json.dumps({k: _json_number(v) if isinstance(v, float) else v for k, v in result.items()}))
    else:
        print(f"rows                 {n}")
        print(f"mean log-likelihood  {mean:.6f}")
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
    from .persistence import read_model_metadata

    _reporter("info", False, False)
    est = load_model_file(model)
    with bad_input(ValueError, FileNotFoundError):
        meta, _ = read_model_metadata(model)
    description = {
        "model": model,
        "format": meta["format"],
        "format_version": meta["format_version"],
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
        "n_parameters": int(est._n_parameters()),
        "params": {k: v for k, v in meta["params"].items()},
        "weights": est.weights_.tolist(),
        "means": est.means_.tolist(),
        "covariances": est.covariances_.tolist(),
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
    print(f"components       {est.n_components} ({est.covariance_type} covariances), "
          f"{est.n_features_in_} feature(s), {description['n_parameters']} free parameters")
    if description["feature_names_in"]:
        print(f"features         {', '.join(description['feature_names_in'])}")
    print(f"fit              {'converged' if est.converged_ else 'did not converge'} after "
          f"{est.n_iter_} iteration(s), lower bound {_fmt(est.lower_bound_, '.6f')}, "
          f"{sum(est.iteration_seconds_):.2f} s in iterations")
    data = description["metadata"].get("data")
    if isinstance(data, dict):
        shape = "x".join(str(n) for n in data.get("shape", []))
        print(f"training data    {data.get('source')} ({shape}, {data.get('dtype')})")
    params = ", ".join(f"{k}={v}" for k, v in sorted(meta["params"].items())
                       if k in ("tol", "reg_covar", "max_iter", "n_init", "init_params", "random_state"))
    print(f"options          {params}")
    print_model_summary(est, "components", terminal=False)


# --------------------------------------------------------------------------
# plot, demo
# --------------------------------------------------------------------------


def _parse_features(text, n_features):
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
        metavar="[DATA]", help="Data to draw a sample of under the ellipses.", show_default=False)] = None,
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
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    """Plot the convergence curve and the components' 2-sigma ellipses over a data sample (PNG)."""
    from . import plotting

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
                                 memory_limit, processes, dashboard)
        cluster.check()
        X = read_data(data, parse_columns(columns), chunks)
        check_features(est, X, model)
        with _warnings_to(reporter), dask_client(cluster, reporter):
            with bad_input(ValueError):
                points = plotting.sample_rows(X, sample, random_state)
    with bad_input(ValueError):
        fig = plotting.plot_model(est, points, features=idx, pca=pca, title=os.path.basename(model))
    plotting.save_figure(fig, out)
    reporter.event("finished", f"plot written to {out}", out=out)


DEMO_CHUNK_ROWS = 50_000


@app.command(epilog=EXIT_CODES_HELP)
def demo(
    out: Annotated[str, typer.Option("--out", "-o", metavar="PNG",
                                     help="Plot to write (replaced if it exists).",
                                     rich_help_panel=OUTPUT)] = "daskem-demo.png",
    rows: Annotated[int, typer.Option("--rows", min=100, help="Rows of synthetic data.")] = 300_000,
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
    quiet: QuietOpt = False,
    log_json: LogJsonOpt = False,
):
    """Fit a synthetic Zarr dataset on a local cluster, print the summary and write a plot.

    The data (well-separated Gaussian components) are written to a temporary
    folder that is removed afterwards.
    """
    import tempfile

    from . import plotting
    from .demo import make_demo_zarr
    from .gaussian_mixture import GaussianMixture

    reporter = _reporter("demo", quiet, log_json)
    cluster = ClusterOptions(scheduler, scheduler_file, workers, threads_per_worker,
                             memory_limit, processes, dashboard)
    cluster.check()
    if scheduler or scheduler_file:
        raise BadInput("the demo writes its data to a local temporary folder: run it on a local cluster")
    _check_local(out, "--out (the image)")
    with tempfile.TemporaryDirectory(prefix="daskem-demo-") as tmp:
        store = os.path.join(tmp, "demo.zarr")
        truth = make_demo_zarr(store, rows, n_components, n_features, random_state,
                               chunk_rows=DEMO_CHUNK_ROWS)
        reporter.event("start", f"synthetic data: {rows} rows x {n_features} features, "
                                f"{n_components} components, in {store}",
                       data=store, shape=[rows, n_features], n_components=n_components)
        X = read_data(store, chunks=DEMO_CHUNK_ROWS)
        est = GaussianMixture(n_components, covariance_type="full", random_state=random_state,
                              max_iter=200, tol=1e-4)
        reporter.begin_fit(1, est.max_iter)
        started = time.perf_counter()

        def on_state(s):
            if not s.lower_bounds:
                reporter.on_init(s.init)

        def on_iteration(n_iter, lower_bound, change, parameters, seconds):
            reporter.on_iteration(n_iter, lower_bound, change, seconds)

        with _warnings_to(reporter), dask_client(cluster, reporter):
            try:
                est._fit(X, on_iteration=on_iteration, on_state=on_state)
            finally:
                reporter.end_fit()
            points = plotting.sample_rows(X, 5000, random_state)
        seconds = time.perf_counter() - started
        reporter.event("converged" if est.converged_ else "not_converged",
                       f"{'converged' if est.converged_ else 'did not converge'} after "
                       f"{est.n_iter_} iteration(s) in {seconds:.1f} s",
                       n_iter=est.n_iter_, lower_bound=_json_number(est.lower_bound_))
        fig = plotting.plot_model(est, points, title=f"daskem demo: {rows} rows")
        plotting.save_figure(fig, out)
    if not quiet and not log_json:
        print_model_summary(est, "demo model", terminal=_isatty(sys.stdout), n_rows=rows)
        error = truth.mean_error(est.means_)
        print(f"largest distance between a true mean and the nearest fitted mean: {error:.4f}")
        print(f"plot written to {out}")
    reporter.event("finished", f"plot written to {out} ({seconds:.1f} s)", out=out,
                   seconds=round(seconds, 3))


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def _report_error(message, exit_code):
    reporter = _REPORTER
    if reporter is not None:
        reporter.error(message, exit_code)
    else:
        print(f"daskem: error: {one_line(message)}", file=sys.stderr, flush=True)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that clusters are closed on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None):
    """Run the command line and exit with its code (0, 1, 2, 3, 130 or 143)."""
    global _REPORTER
    _REPORTER = None
    import signal
    import threading

    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = app(args=argv, prog_name="daskem", standalone_mode=False)
        code = code if isinstance(code, int) else EXIT_OK
        if code == 130:  # Typer turns Ctrl-C into Exit(130)
            _report_error("interrupted", 130)
    except CLIError as e:
        _report_error(str(e), e.exit_code)
        code = e.exit_code
    except typer.TyperException as e:  # usage errors: bad flags, missing arguments
        if type(e).__name__ == "NoArgsIsHelpError" and getattr(e, "ctx", None) is not None:
            print(e.ctx.get_help(), file=sys.stderr)
        else:
            _report_error(e.format_message(), e.exit_code)
        code = e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        _report_error("interrupted", 130)
        code = 130
    except Terminated:
        _report_error("terminated (SIGTERM)", 143)
        code = 143
    except Exception as e:
        if os.environ.get("DASKEM_DEBUG"):
            traceback.print_exc()
        _report_error(f"{type(e).__name__}: {e}" + ("" if os.environ.get("DASKEM_DEBUG")
                      else " (set DASKEM_DEBUG=1 for the traceback)"), EXIT_FAILURE)
        code = EXIT_FAILURE
    finally:
        if _REPORTER is not None:
            _REPORTER.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
