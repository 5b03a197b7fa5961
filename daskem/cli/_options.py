"""Options shared by the commands: the cluster, data and output options, --config, parsing."""

import contextlib
import enum
import logging
import os
from collections.abc import Iterator
from typing import Annotated, Any, Optional, Union

import typer

from ._errors import BadInput
from ._report import Reporter

# --------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------


class ClusterOptions:
    def __init__(self, scheduler: Optional[str] = None, scheduler_file: Optional[str] = None,
                 workers: Optional[int] = None, threads_per_worker: Optional[int] = None,
                 memory_limit: Optional[str] = "auto", processes: bool = True, dashboard: bool = True,
                 no_workers_timeout: Optional[float] = None):
        self.scheduler = scheduler
        self.scheduler_file = scheduler_file
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.memory_limit = memory_limit
        self.processes = processes
        self.dashboard = dashboard
        self.no_workers_timeout = no_workers_timeout

    def check(self) -> None:
        """Usage errors, found before anything starts."""
        if self.scheduler and self.scheduler_file:
            raise BadInput("give --scheduler or --scheduler-file, not both")
        if self.no_workers_timeout is not None and not self.no_workers_timeout > 0:
            raise BadInput(f"invalid --no-workers-timeout {self.no_workers_timeout!r}: give a positive "
                           "number of seconds (inf to wait for workers forever)")
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
def dask_client(options: ClusterOptions, reporter: Reporter) -> Iterator[Any]:
    """A distributed Client for the command; closes it (and its LocalCluster) on exit.

    With ``--no-workers-timeout``, daskem's no-workers watchdog
    (:func:`daskem._cluster.no_workers_watch`) uses it for the whole block.
    """
    import importlib.util

    import dask
    from distributed import Client, LocalCluster

    from .._cluster import NO_WORKERS_TIMEOUT_KEY, check_workers
    from ._loop_errors import quiet_abandoned_timeouts

    options.check()
    timeout = ({} if options.no_workers_timeout is None
               else {NO_WORKERS_TIMEOUT_KEY: float(options.no_workers_timeout)})
    cluster = None
    dashboard = False
    if options.scheduler:
        reporter.event("cluster", f"connecting to scheduler {options.scheduler}", scheduler=options.scheduler)
        _check_scheduler_address(options.scheduler)
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
        # the workers' statistical profiler feeds only the dashboard's profile page: without
        # the dashboard it costs CPU for nothing (whole fits on 2 worker processes x 1 thread
        # took 0.99-1.31x as long with it, median 1.05x; benchmarks/RESULTS.md)
        profile = {"distributed.worker.profile.enabled": dashboard}
        with dask.config.set(profile):
            cluster = LocalCluster(**kwargs)
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
        if options.dashboard and not dashboard:
            reporter.event("dashboard", "dashboard disabled: install bokeh>=3.1 to get it", dashboard=None)
    try:
        quiet_abandoned_timeouts(client, own_workers=cluster is not None)
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
        with dask.config.set(timeout):
            yield client
    finally:
        try:
            client.close()
        finally:
            if cluster is not None:
                cluster.close()


def _check_scheduler_address(address: str) -> None:
    """A malformed address is bad usage (one that cannot be reached is a failure, exit 1).

    Checked before a Client is made: a Client that fails on its address has already
    made itself the process's default client and Dask's scheduler.
    """
    from distributed.comm import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except ValueError as error:
        raise BadInput(f"invalid --scheduler {address!r}: {error}") from None


def _dashboard_link(client: Any) -> Optional[str]:
    try:
        return client.dashboard_link
    except Exception:
        return None


# --------------------------------------------------------------------------
# Shared options
# --------------------------------------------------------------------------

CLUSTER = "Cluster"
OUTPUT = "Output"
BAYESIAN = "Bayesian mixture"
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
NoWorkersTimeoutOpt = Annotated[Optional[float], typer.Option(
    "--no-workers-timeout", metavar="SECONDS",
    help="Stop (exit code 1, the checkpoint kept for --resume) once the cluster has had no worker "
         "for this long; workers back sooner let the command go on. Default: the Dask setting "
         "daskem.no-workers-timeout (DASK_DASKEM__NO_WORKERS_TIMEOUT), 300 s unless set; "
         "inf waits forever.",
    rich_help_panel=CLUSTER)]
DashboardOpt = Annotated[bool, typer.Option(
    "--dashboard/--no-dashboard",
    help="Serve the local cluster's dashboard on 127.0.0.1 (random port; needs bokeh). "
         "Without it the workers skip distributed's profiler, which only the dashboard shows.",
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
    "--chunks", min=1, metavar="ROWS",
    help="Rows per chunk (default: sized for the cluster's workers, 1/32 of their memory limit per "
         "thread, at most 128 MiB).",
    rich_help_panel=DATA_PANEL)]
WeightColumnOpt = Annotated[Optional[str], typer.Option(
    "--weight-column", metavar="NAME",
    help="Parquet column of non-negative row weights (left out of the features).",
    rich_help_panel=DATA_PANEL)]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", metavar="PATH",
    help="Zarr array or .npy file of non-negative row weights, one per row.",
    rich_help_panel=DATA_PANEL)]


def parse_columns(columns: Union[None, str, list[str], tuple[str, ...]]) -> Optional[list[str]]:
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


MAX_COMPONENT_COUNTS = 10_000


def parse_components(text: str) -> list[int]:
    """'1-10', '2,4,8' or '3' -> sorted list of component counts."""
    ranges = []
    try:
        for part in str(text).split(","):
            lo, sep, hi = part.strip().partition("-")
            ranges.append((int(lo), int(hi) if sep else int(lo)))
    except ValueError:
        raise BadInput(f"invalid --n-components {text!r}: give e.g. 1-10 or 2,4,8") from None
    if any(lo < 1 for lo, hi in ranges if lo <= hi):
        raise BadInput(f"invalid --n-components {text!r}: counts must be positive")
    # sized before it is built: each count is a fit, and '1-1000000000' would fill the memory
    if sum(max(0, hi - lo + 1) for lo, hi in ranges) > MAX_COMPONENT_COUNTS:
        raise BadInput(f"invalid --n-components {text!r}: more than {MAX_COMPONENT_COUNTS} counts "
                       "to try (each is a fit)")
    counts = {k for lo, hi in ranges for k in range(lo, hi + 1)}
    if not counts:
        raise BadInput(f"invalid --n-components {text!r}: no count to try (write a range low-high)")
    return sorted(counts)


# --------------------------------------------------------------------------
# Fit options (fit and select)
# --------------------------------------------------------------------------


# scikit-learn's four names and mclust's fourteen models (written out: the CLI
# does not import the estimators at start-up)
COVARIANCE_NAMES = ("full", "tied", "diag", "spherical", "EII", "VII", "EEI", "VEI", "EVI", "VVI",
                    "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV")
CovarianceType = enum.Enum("CovarianceType", {name: name for name in COVARIANCE_NAMES}, type=str)


class InitParams(str, enum.Enum):
    auto = "auto"
    hc = "hc"
    coreset = "coreset"
    kmeans_parallel = "k-means||"
    kmeans = "kmeans"
    kmeans_pp = "k-means++"
    random = "random"
    random_from_data = "random_from_data"


class PriorType(str, enum.Enum):
    dirichlet_process = "dirichlet_process"
    dirichlet_distribution = "dirichlet_distribution"


class CacheMode(str, enum.Enum):
    auto = "auto"
    true = "true"
    false = "false"


def cache_value(cache: CacheMode) -> Union[bool, str]:
    """The estimator's ``cache`` parameter for a --cache choice."""
    return {"auto": "auto", "true": True, "false": False}[cache.value]


MaxIterOpt = Annotated[int, typer.Option("--max-iter", min=0, help="EM iterations at most.")]
InitParamsOpt = Annotated[InitParams, typer.Option("--init-params", help="Initialisation method.")]
RegCovarOpt = Annotated[float, typer.Option(
    "--reg-covar", min=0.0, help="Added to the covariance diagonals.")]


class MissingMode(str, enum.Enum):
    raise_ = "raise"
    drop = "drop"
    marginalize = "marginalize"


MissingOpt = Annotated[MissingMode, typer.Option(
    "--missing", help="Missing values (NaN): raise an error, drop the rows with holes, or "
                      "marginalize (exact EM over the observed values). Stored in the model: "
                      "predict and score follow it.")]


class Acceleration(str, enum.Enum):
    auto = "auto"
    squarem = "squarem"
    none = "none"


def acceleration_value(acceleration: Acceleration) -> str | None:
    """The estimator's ``acceleration`` parameter for an --acceleration choice."""
    return None if acceleration is Acceleration.none else acceleration.value


AccelerationOpt = Annotated[Acceleration, typer.Option(
    "--acceleration", help="EM acceleration: squarem (fewer passes to convergence; a step that "
                           "would lower the log-likelihood is replaced by the plain EM step), none "
                           "(plain EM, step for step scikit-learn's) or auto (squarem for batch "
                           "EM).")]
CacheOpt = Annotated[CacheMode, typer.Option(
    "--cache", help="Keep the data in cluster memory during the fit (auto: when it fits).",
    rich_help_panel=DATA_PANEL)]


# --------------------------------------------------------------------------
# --config
# --------------------------------------------------------------------------

_PATH_KEYS = ("data", "out", "checkpoint", "scheduler_file", "weights", "plot")


def _load_config(ctx: typer.Context, param: typer.CallbackParam, value: Optional[str]) -> Optional[str]:
    """Eager --config callback: the TOML file becomes the command's default values."""
    from ..io import local_path

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
        if name in _PATH_KEYS and isinstance(item, str) and local_path(item) is not None:
            # relative paths in a config file are relative to the file
            if not os.path.isabs(local_path(item)) and not item.startswith("file://"):
                item = os.path.join(base, item)
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value
