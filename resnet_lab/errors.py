"""Errors that report bad user input.

The entry points catch ``UserError`` and print its message without a traceback, exiting
with status 2: the message itself must say what was wrong, what is allowed and how to fix
it. Anything else that escapes is a bug in resnet_lab and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a config value, a path, a data file or a checkpoint."""


class ConfigError(UserError, ValueError):
    """A config value (or combination of values) that cannot work."""


class DataError(UserError):
    """Missing, partial or corrupt data files."""


class CheckpointError(UserError):
    """A checkpoint or weights file that is missing, unreadable, unsafe or incompatible."""
