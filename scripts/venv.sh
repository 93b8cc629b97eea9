# Sourced by scripts/test.sh, scripts/bench.sh and scripts/test-python.sh:
# one Python virtual environment at target/venv with everything in
# tools/requirements.txt (moto, cargo-lambda, maturin, pytest, mypy,
# Airflow, Dagster), put first on PATH. Nothing is installed globally.
# Reinstalls only when tools/requirements.txt changed since the last install.
OXIFLOW_VENV="$(pwd)/target/venv"
if [ ! -x "$OXIFLOW_VENV/bin/python" ]; then
  echo "python venv: creating $OXIFLOW_VENV"
  python3 -m venv "$OXIFLOW_VENV"
fi
if ! cmp -s tools/requirements.txt "$OXIFLOW_VENV/.requirements"; then
  echo "python venv: installing tools/requirements.txt (about a minute, once)"
  "$OXIFLOW_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$OXIFLOW_VENV/bin/python" -m pip install --quiet -r tools/requirements.txt
  cp tools/requirements.txt "$OXIFLOW_VENV/.requirements"
fi
export OXIFLOW_VENV PATH="$OXIFLOW_VENV/bin:$PATH"
