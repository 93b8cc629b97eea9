"""oxiflow state for Apache Airflow 3: an operator, a sensor, a trigger and a state-store backend.

``get_provider_info`` is the provider entry point (``apache_airflow_provider``);
importing this package does not import Airflow: the classes load on first use.

* :class:`OxiflowStepOperator` runs one step or shard of a pipeline, one
  checkpoint per batch; a retry resumes from the bookmark.
* :class:`OxiflowStepSensor` waits until a step, a shard or a pipeline is completed.
* :class:`OxiflowStepTrigger` is the deferrable half of both.
* :class:`OxiflowStateStoreBackend` is a ``[state_store] backend`` whose writes
  are compare-and-swaps.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from oxiflow.airflow.batches import Batch, Cursor, StepResult

if TYPE_CHECKING:
    from oxiflow.airflow.operators import OxiflowStepOperator
    from oxiflow.airflow.sensors import OxiflowStepSensor
    from oxiflow.airflow.state_store import OxiflowStateStoreBackend
    from oxiflow.airflow.triggers import OxiflowStepTrigger

__all__ = [
    "Batch",
    "Cursor",
    "OxiflowStateStoreBackend",
    "OxiflowStepOperator",
    "OxiflowStepSensor",
    "OxiflowStepTrigger",
    "StepResult",
    "get_provider_info",
]

_LAZY = {
    "OxiflowStepOperator": "oxiflow.airflow.operators",
    "OxiflowStepSensor": "oxiflow.airflow.sensors",
    "OxiflowStepTrigger": "oxiflow.airflow.triggers",
    "OxiflowStateStoreBackend": "oxiflow.airflow.state_store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("oxiflow")
    except PackageNotFoundError:
        return "0.0.0"


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager reads (``apache_airflow_provider`` entry point)."""
    return {
        "package-name": "oxiflow",
        "name": "oxiflow state",
        "description": "Durable checkpoints and leases for pipeline steps in plain object storage: "
        "an operator that resumes from its bookmark, a sensor, a trigger and a compare-and-swap state-store backend.",
        "versions": [_version()],
        "integrations": [
            {
                "integration-name": "oxiflow state",
                "external-doc-url": "https://github.com/oxide-flow",
                "tags": ["software"],
            }
        ],
        "operators": [{"integration-name": "oxiflow state", "python-modules": ["oxiflow.airflow.operators"]}],
        "sensors": [{"integration-name": "oxiflow state", "python-modules": ["oxiflow.airflow.sensors"]}],
        "triggers": [{"integration-name": "oxiflow state", "python-modules": ["oxiflow.airflow.triggers"]}],
        "config": {
            "oxiflow": {
                "description": "oxiflow state store backend (``[state_store] backend = "
                "oxiflow.airflow.state_store.OxiflowStateStoreBackend``).",
                "options": {
                    "state_store_url": {
                        "description": "The oxiflow store URL (s3://, gs://, az://, file://, redis://, …). "
                        "Empty: .oxiflow/config.yaml and OXIFLOW_* environment variables, as for the oxiflow CLI.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://my-bucket/oxiflow",
                        "default": "",
                    },
                    "state_store_prefix": {
                        "description": "Key prefix of the state store's objects in that store.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "airflow/state-store",
                        "default": "airflow/state-store",
                    },
                },
            }
        },
    }
