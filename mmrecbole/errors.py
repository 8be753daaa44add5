"""User-facing errors.

Every error a user can fix by changing their input is a ``UserError``: the CLI prints its message as one line on
stderr and exits with code 2 (no traceback unless ``--debug``). Messages say what is wrong, where it came from, and
how to fix it.
"""


class UserError(Exception):
    """Bad input that the user can fix; the message is shown as-is."""


class ConfigError(UserError):
    """Unknown model, unknown or malformed configuration key/value."""


class DatasetError(UserError):
    """Missing or malformed dataset files."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, unsafe, or belongs to another model/dataset."""


class FeatureError(UserError):
    """Missing, stale or malformed item feature tables or their raw inputs."""


class ServingError(UserError):
    """A recommendation request the model cannot answer: unknown ids, k out of range, an empty history, or a
    request the model cannot serve (a history for a model without a history path)."""


class UnknownIdError(ServingError):
    """A user or item id the model's data does not hold (HTTP 404)."""


#: Exit code of a command refused for bad input.
EXIT_USER_ERROR = 2


def run_command(body, argv) -> int:
    """Run a command-line entry point's `body()` (returns its exit code; None = 0): a UserError becomes one line
    `error: ...` on stderr and exit code 2 (the traceback instead when `argv` holds --debug); Ctrl-C exits 130."""
    import sys

    try:
        return body() or 0
    except UserError as exc:
        if "--debug" in argv:
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
