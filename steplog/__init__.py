"""steplog: an embedded, high-throughput store for machine-learning experiment data.

    import steplog
    with steplog.open("runs.steplog") as store:
        with store.start_run(experiment="sweep", params={"lr": 0.1}) as run:
            run.log("loss", 0.25, step=10)
        store.read(run.id, "loss")
"""

from .engine.errors import (AlreadyExistsError, ClosedError, CorruptionError, FormatVersionError, InvalidArgumentError,
                            InvalidTypeError, NotFoundError, ReadOnlyError, StepLogError,
                            StorageFullError, StorageIOError)
from .engine.index import FORMAT_VERSION
from .run import Run
from .store import Store, open

__all__ = ["open", "Store", "Run", "FORMAT_VERSION", "StepLogError", "InvalidArgumentError", "InvalidTypeError",
           "NotFoundError", "AlreadyExistsError", "ReadOnlyError", "ClosedError", "CorruptionError", "FormatVersionError", "StorageFullError",
           "StorageIOError"]
__version__ = "0.1.0"
