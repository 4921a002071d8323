"""The controller's one error: what a refused request answers."""

from __future__ import annotations


class ControllerError(Exception):
    """A request refused with a 4xx ``status``, a ``code`` and a one-line
    ``message`` naming the field and the reason (never a secret)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(what: str) -> ControllerError:
    """404 for ``what`` (e.g. "scale set 'web'")."""
    return ControllerError(404, "NotFound", f"{what} does not exist")
