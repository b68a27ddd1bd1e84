"""The lab's two kinds of failure: broken, or not possible on this machine."""

from __future__ import annotations


class LabError(Exception):
    """The lab tried and failed (a build step, a boot); ``hint`` says what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


class LabUnavailableError(LabError):
    """A prerequisite is missing here (a tool, a package, the network): the lab cannot run."""
