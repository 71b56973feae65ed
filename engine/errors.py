"""Every error steplog raises. Each also inherits the matching built-in, so callers
can catch either ``steplog.InvalidArgumentError`` or plain ``ValueError``."""

from __future__ import annotations


class StepLogError(Exception):
    """Root of every error raised by steplog."""


class InvalidArgumentError(StepLogError, ValueError):
    """An argument has the right type but a bad value. ``argument`` names it."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"{argument}: {message}")
        self.argument = argument


class InvalidTypeError(StepLogError, TypeError):
    """An argument has the wrong type. ``argument`` names it."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"{argument}: {message}")
        self.argument = argument


class NotFoundError(StepLogError, KeyError):
    """A run or series that the store does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(StepLogError, ValueError):
    """An experiment (or other named thing) that the store already holds."""


class ClosedError(StepLogError, RuntimeError):
    """An operation on a store that was closed, or logging to a run that has ended."""


class CorruptionError(StepLogError):
    """Stored bytes fail their checks. ``path`` and ``offset`` say where."""

    def __init__(self, path: str, offset: int, reason: str):
        super().__init__(f"{path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class FormatVersionError(StepLogError):
    """The store was written in a format version this steplog cannot read."""


class StorageFullError(StepLogError, OSError):
    """The disk is full or a file-size limit was hit; nothing flushed before is lost.
    Free space (or raise the limit) and flush again: the unflushed points are kept."""


class StorageIOError(StepLogError, OSError):
    """The operating system reported an I/O error (EIO) while writing; the disk may be
    failing. Nothing flushed before is lost; the unflushed points are kept."""


class ReadOnlyError(StepLogError, PermissionError):
    """A write to a store opened read-only (``mode="r"``)."""
