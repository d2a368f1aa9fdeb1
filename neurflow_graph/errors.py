"""The project's exception hierarchy.

Every error a user can cause derives from :class:`NeurflowError`. The CLI turns
any of them into one line on stderr and exit code 2 (``exit_code``); library
callers can catch the narrower classes. Driver and OS errors are wrapped with
``raise ... from e`` so the cause stays attached for debugging.
"""

from __future__ import annotations


class NeurflowError(Exception):
    """Base class: a problem the user can fix. ``str(e)`` is the one-line message."""

    exit_code = 2


class InputError(NeurflowError):
    """A bad argument, option or file given by the user."""


class ModelError(InputError):
    """Unknown model, bad factory, or a layer name that does not exist."""


class WeightsError(ModelError):
    """Weights that cannot be obtained or do not fit the architecture."""


class ImageError(InputError):
    """An image folder that is missing, empty, or has no image of the asked class."""


class RunFormatError(InputError):
    """A run directory / circuit.json that is missing, partial or malformed."""


class ExtractionError(NeurflowError):
    """The extraction engine cannot proceed with the given inputs."""


class StoreError(NeurflowError):
    """Base class for graph-store problems."""


class StoreConnectionError(StoreError):
    """The store cannot be reached or refused the credentials."""


class StoreURLError(StoreError, InputError):
    """A ``--store`` URL that is not understood."""


class QueryError(StoreError):
    """Unknown library query, bad parameters, or a query the store rejected."""
