"""The installed package: exports, typing files, the Airflow provider entry point."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import oxiflow


def test_the_installed_wheel_is_what_is_imported() -> None:
    path = Path(oxiflow.__file__).resolve()
    assert "site-packages" in path.parts, f"tests must import the installed wheel, not the source tree: {path}"
    assert (path.parent / "py.typed").is_file() and (path.parent / "_oxiflow.pyi").is_file()
    assert oxiflow.__version__ == importlib.metadata.version("oxiflow")


def test_exports() -> None:
    for name in oxiflow.__all__:
        assert hasattr(oxiflow, name), name
    assert oxiflow.State.__module__ == "oxiflow._oxiflow"


def test_the_airflow_provider_entry_point() -> None:
    (entry,) = [e for e in importlib.metadata.distribution("oxiflow").entry_points if e.group == "apache_airflow_provider"]
    assert (entry.name, entry.value) == ("provider_info", "oxiflow.airflow:get_provider_info")
    assert entry in importlib.metadata.entry_points(group="apache_airflow_provider"), "Airflow finds it"
    info = entry.load()()
    assert info["package-name"] == "oxiflow"
