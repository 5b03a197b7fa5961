"""The Typer application, the help shared by its commands, and the entry point ``main``.

The commands register themselves on ``app`` when their modules are imported (the
package's ``__init__`` imports them); this module does not import them.
"""

import os
import sys
import traceback
from typing import NoReturn, Optional

import typer

from ._errors import EXIT_FAILURE, EXIT_OK, CLIError, one_line
from ._report import current_reporter, forget_reporter

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
# Entry point
# --------------------------------------------------------------------------


def _report_error(message: str, exit_code: int) -> None:
    # the running command's reporter, as _report._reporter() set it: errors in its mode
    reporter = current_reporter()
    if reporter is not None:
        reporter.error(message, exit_code)
    else:
        print(f"daskem: error: {one_line(message)}", file=sys.stderr, flush=True)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that clusters are closed on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: Optional[list[str]] = None) -> NoReturn:
    """Run the command line and exit with its code (0, 1, 2, 3, 130 or 143)."""
    forget_reporter()
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
        reporter = current_reporter()
        if reporter is not None:
            reporter.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    sys.stdout.flush()
    sys.exit(code)
