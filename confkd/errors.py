"""Exceptions that carry a message meant for the user, not a traceback."""


class ConfkdError(Exception):
    """Base class: the CLI and stages print the message and exit non-zero."""


class ParamsError(ConfkdError):
    """params.yaml is missing, malformed, or has unknown keys / wrong types."""


class DataError(ConfkdError):
    """An input data file is missing, malformed, or holds invalid rows."""


class ValidationFailed(ConfkdError):
    """A critical data expectation failed."""


class ModelNotFound(ConfkdError):
    """A model path or id could not be resolved or loaded."""
