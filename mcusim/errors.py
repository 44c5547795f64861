"""Errors that reach the user as one clear line (CLI exit code 2), never a traceback.

Every user mistake (bad model file, unsupported op, wrong input, bad device file, model
that does not fit) raises a subclass of :class:`UserError`. Anything else is a bug in
mcusim and is allowed to surface as a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave us. ``str(err)`` is the one-line message."""

    def __init__(self, message: str, *, file: str | None = None, layer: str | None = None):
        self.file = file
        self.layer = layer
        self.detail = message
        super().__init__(self._compose())

    def _compose(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.layer:
            where.append(f"layer {self.layer}")
        return (": ".join(where) + ": " + self.detail) if where else self.detail


class ModelFormatError(UserError):
    """The model file is unreadable, truncated, malformed or of an unsupported version."""


class UnsupportedOpError(UserError):
    """The model uses an operator (or an operator variant) mcusim does not implement."""


class GraphError(UserError):
    """Shapes, types or attributes of an op are inconsistent."""


class InputError(UserError):
    """Input tensors given to a run have the wrong shape, dtype or count."""


class DeviceError(UserError):
    """A device description is missing, malformed or inconsistent."""


class FitError(UserError):
    """The model does not fit the device (memory need vs what the device has)."""
