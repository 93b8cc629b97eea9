#!/usr/bin/env bash
# The Python package's tests: builds the wheel once (release, in the
# workspace's target/), installs it into the venv, runs pytest over
# python/tests (the package, Airflow and Dagster) and mypy --strict over
# python/examples.
#
# scripts/test.sh calls it after `cargo test --workspace --release`, with the
# venv on PATH and moto, azurite and redis running; on its own it sets up
# what is missing (the venv, moto, the oxiflow binary the CLI tests run).
# Usage: scripts/test-python.sh [PYTEST ARGS…]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${OXIFLOW_VENV:-}" ]; then source scripts/venv.sh; fi
if [ -z "${OXIFLOW_TEST_S3_ENDPOINT:-}" ]; then
  source scripts/servers.sh
  start_moto
fi
if [ ! -x target/release/oxiflow ]; then cargo build --release --locked -p oxiflow; fi

echo "python: wheel (maturin build --release: the workspace's target/, only the binding and what differs in features rebuilds)"
started=$SECONDS
rm -rf target/python-wheel
maturin build --release --strip --locked -m python/Cargo.toml --out target/python-wheel
python -m pip install --quiet --force-reinstall --no-deps target/python-wheel/oxiflow-*.whl
echo "python: wheel built and installed in $((SECONDS - started)) s"

echo "python: pytest python/tests"
# From the repository root, not python/: `import oxiflow` must find the
# installed wheel, not the source folder without its native module.
python -m pytest python/tests -p no:cacheprovider "$@"

echo "python: mypy --strict (the examples, the Airflow provider, the Dagster integration and their tests)"
mypy --strict --no-incremental python/examples python/oxiflow/airflow python/oxiflow/dagster \
  python/tests/test_airflow.py python/tests/test_dagster.py examples/airflow examples/dagster
