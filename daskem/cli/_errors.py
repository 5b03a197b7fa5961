"""Exit codes and the errors that carry them (one line on stderr, then the code)."""

import contextlib
from collections.abc import Iterator

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_NOT_CONVERGED = 0, 1, 2, 3


class CLIError(Exception):
    """An error with a one-line message and an exit code."""

    exit_code = EXIT_FAILURE


class BadInput(CLIError):
    """Bad usage or bad input data: exit code 2."""

    exit_code = EXIT_BAD_INPUT


class NotConverged(CLIError):
    """The fit did not converge and --strict was given: exit code 3."""

    exit_code = EXIT_NOT_CONVERGED


def one_line(text: object) -> str:
    text = " ".join(str(text).split())
    return text or "unknown error"


@contextlib.contextmanager
def bad_input(*types: type[BaseException], prefix: str = "") -> Iterator[None]:
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
