"""TensorBoard on steplog: ``SummaryWriter`` (a drop-in for torch.utils.tensorboard's
and tensorboardX's that writes into a steplog store), event-file reading (events.py:
TFRecord framing and both CRC-32C checks done here) and ``import_tensorboard`` (the
``steplog import-tensorboard`` command). Nothing heavy is imported until used: the
writer needs neither tensorboard nor torch; reading event files needs the
``tensorboard`` package's compiled protos (``pip install 'steplog[tensorboard]'``)."""

from __future__ import annotations

__all__ = ["SummaryWriter", "import_tensorboard", "read_event_file", "UnsupportedSummaryError"]


def __getattr__(name: str):
    if name in ("SummaryWriter", "UnsupportedSummaryError"):
        from . import writer

        return getattr(writer, name)
    if name == "import_tensorboard":
        from .importer import import_tensorboard

        return import_tensorboard
    if name == "read_event_file":
        from .events import read_event_file

        return read_event_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
