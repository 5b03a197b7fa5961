"""Progress and log events on stderr, and the model summaries printed on stdout."""

import contextlib
import datetime
import json
import math
import sys
import time
import warnings
from collections.abc import Iterator
from typing import IO, Any, Optional

from ._errors import one_line


def _json_number(x: Optional[float]) -> Optional[float]:
    """A float for the command line's JSON: None for inf and nan (see daskem._encoding)."""
    # imported here: `daskem --help` loads no NumPy
    from .._encoding import json_float

    return json_float(x, nonfinite="null")


def _json_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its floats made JSON-safe (None for inf and nan)."""
    return {k: _json_number(v) if isinstance(v, float) else v for k, v in record.items()}


class Reporter:
    """Progress and log events of one command, on stderr.

    Modes: ``rich`` (a live display, when stderr is a terminal), ``plain``
    (one line per event), ``json`` (one JSON object per line, ``--log-json``)
    and ``quiet`` (only errors).
    """

    def __init__(self, command: str, quiet: bool = False, log_json: bool = False,
                 stream: Optional[IO[str]] = None, terminal: Optional[bool] = None):
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
    def event(self, name: str, message: Optional[str], **fields: Any) -> None:
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

    def error(self, message: str, exit_code: int) -> None:
        """Errors are always reported, on one line."""
        self.close()
        if self.mode in ("json", "json-quiet"):
            self._json("error", one_line(message), {"exit_code": exit_code})
        else:
            print(f"daskem: error: {one_line(message)}", file=self.stream, flush=True)

    # -- fit progress
    def begin_fit(self, n_init: int, max_iter: Optional[int]) -> None:
        self.n_init, self.max_iter = n_init, max_iter

    def on_init(self, init: int, done: int = 0, lower_bound: Optional[float] = None) -> None:
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

    def on_iteration(self, n_iter: int, lower_bound: float, change: Optional[float],
                     seconds: float) -> None:
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

    def end_fit(self) -> None:
        self._finish_task()
        self.close()

    def _rich_progress(self):
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
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

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _fmt(x: Optional[float], spec: str) -> str:
    if x is None:
        return "-"
    return f"{x:{spec}}" if math.isfinite(x) else str(x)


def _escape(text: object) -> str:
    from rich.markup import escape

    return escape(str(text))


def _isatty(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# The reporter of the running command; main() reads it here to report an error in the
# command's own mode (e.g. as a JSON event with --log-json).
_REPORTER: Optional[Reporter] = None


def _reporter(command: str, quiet: bool, log_json: bool) -> Reporter:
    global _REPORTER
    _REPORTER = Reporter(command, quiet=quiet, log_json=log_json)
    return _REPORTER


def current_reporter() -> Optional[Reporter]:
    """The reporter of the running command; None before a command made one."""
    return _REPORTER


def forget_reporter() -> None:
    """Start without a reporter (main(), before each command line is run)."""
    global _REPORTER
    _REPORTER = None


@contextlib.contextmanager
def _warnings_to(reporter: Reporter) -> Iterator[None]:
    """Python warnings become events (hidden with --quiet) instead of raw stderr text."""
    from sklearn.exceptions import ConvergenceWarning

    def show(message, category, filename, lineno, file=None, line=None):
        reporter.event("warning", f"warning: {category.__name__}: {one_line(message)}",
                       category=category.__name__)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as a fit event instead
        # the commands match a model's columns by name themselves (cli._data.model_columns)
        # and hand the estimator plain arrays in its feature order
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        warnings.showwarning = show
        yield


# --------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------


def _model_rows(est: Any, max_features: int = 6) -> list[tuple[str, str, str]]:
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


def print_model_summary(est: Any, title: str, terminal: bool = False, n_rows: Optional[int] = None,
                        stream: Optional[IO[str]] = None) -> None:
    stream = stream if stream is not None else sys.stdout
    status = "converged" if est.converged_ else "did not converge"
    head = (
        f"{est.n_components} {est.covariance_type} component(s), {est.n_features_in_} feature(s); "
        f"{status} after {est.n_iter_} iteration(s); lower bound {_fmt(est.lower_bound_, '.6f')}"
        + (f"; {n_rows} rows" if n_rows is not None else "")
    )
    rows = _model_rows(est)
    if hasattr(est, "weight_concentration_"):  # a variational mixture: say what the prior kept
        from ..bayesian_mixture import ACTIVE_WEIGHT

        active = int((est.weights_ > ACTIVE_WEIGHT).sum())
        head += f"; {active} of {est.n_components} component(s) active (weight > {ACTIVE_WEIGHT:g})"
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
