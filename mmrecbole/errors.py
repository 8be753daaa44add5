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
