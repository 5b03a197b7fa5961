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

Modules: ``_app`` (the Typer app and ``main``), ``_errors`` (exit codes and
errors), ``_report`` (progress events and summaries), ``_options`` (shared
options, the cluster, --config), ``_data`` (reading inputs, checking outputs),
``_fitting`` (the engine's fit with the progress display), and the
commands: ``fit`` (fit, select), ``apply`` (predict, score, info, plot), ``demo``.
"""

# Importing a command module registers its commands on app, in the order that
# `daskem --help` lists them: keep this order.
# isort: off
from . import fit  # noqa: F401
from . import apply  # noqa: F401
from . import demo  # noqa: F401
# isort: on
from ._app import app, main
from ._errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_NOT_CONVERGED,
    EXIT_OK,
    BadInput,
    CLIError,
    NotConverged,
)
from ._report import Reporter

__all__ = [
    "app", "main", "Reporter", "CLIError", "BadInput", "NotConverged",
    "EXIT_OK", "EXIT_FAILURE", "EXIT_BAD_INPUT", "EXIT_NOT_CONVERGED",
]
