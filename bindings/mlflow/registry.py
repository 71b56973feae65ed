"""MLflow's model registry for the steplog:// scheme: steplog keeps no registry, so its
searches answer empty (MLflow's run and experiment pages ask them) and everything else
raises MlflowException saying where a registry can live (``--registry-store-uri``)."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import NOT_IMPLEMENTED, RESOURCE_DOES_NOT_EXIST
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry.abstract_store import AbstractStore

_SEARCHES = ("search_registered_models", "search_model_versions", "search_prompts", "search_prompt_versions",
             "list_webhooks", "list_webhooks_by_event")
_LOOKUPS = ("get_registered_model", "get_latest_versions", "get_model_version", "get_model_version_download_uri",
            "get_model_version_by_alias", "get_prompt", "get_prompt_version", "get_prompt_version_by_alias",
            "get_webhook")
_WRITES = ("create_registered_model", "update_registered_model", "rename_registered_model",
           "delete_registered_model", "set_registered_model_tag", "delete_registered_model_tag",
           "create_model_version", "update_model_version", "transition_model_version_stage",
           "delete_model_version", "set_model_version_tag", "delete_model_version_tag",
           "set_registered_model_alias", "delete_registered_model_alias", "copy_model_version", "create_prompt",
           "delete_prompt", "set_prompt_tag", "delete_prompt_tag", "create_prompt_version",
           "delete_prompt_version", "set_prompt_alias", "delete_prompt_alias", "link_prompts_to_trace",
           "set_prompt_version_tag", "delete_prompt_version_tag", "link_prompt_version_to_model",
           "link_prompt_version_to_run", "create_webhook", "update_webhook", "delete_webhook", "test_webhook")
_WHERE = ("the steplog store keeps no model registry: give mlflow server a --registry-store-uri "
          "(sqlite:///registry.db, say) to register models")


class SteplogRegistryStore(AbstractStore):
    def __init__(self, store_uri=None, tracking_uri=None):
        super().__init__(store_uri, tracking_uri)


def _empty(self, *args, **kwargs):
    return PagedList([], None)


def _raising(method: str, code):
    def refuse(self, *args, **kwargs):
        raise MlflowException(f"{method}: {_WHERE}", code)

    refuse.__name__ = method
    return refuse


for _name in _SEARCHES:
    setattr(SteplogRegistryStore, _name, _empty)
for _name in _LOOKUPS:
    setattr(SteplogRegistryStore, _name, _raising(_name, RESOURCE_DOES_NOT_EXIST))
for _name in _WRITES:
    setattr(SteplogRegistryStore, _name, _raising(_name, NOT_IMPLEMENTED))
