"""The entry point of MLflow's ``mlflow.tracking_store`` group, scheme ``steplog``.

MLflow loads it while ``mlflow.tracking`` is still being imported, so it imports neither
mlflow nor steplog until a store is built: either import here would fail half-way, or
make every ``import mlflow`` pay for steplog."""


def build(store_uri=None, artifact_uri=None):
    from steplog.bindings.mlflow.store import SteplogStore

    return SteplogStore(store_uri=store_uri, artifact_uri=artifact_uri)


def build_registry(store_uri=None, tracking_uri=None):
    from steplog.bindings.mlflow.registry import SteplogRegistryStore

    return SteplogRegistryStore(store_uri=store_uri, tracking_uri=tracking_uri)
