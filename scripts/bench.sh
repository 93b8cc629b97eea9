#!/usr/bin/env bash
# Store benchmarks on a real S3-compatible server (moto), printed as
# markdown tables: scripts/bench.sh [ROUNDS]   (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers.sh
start_moto >/dev/null
OXIFLOW_BENCH_ROUNDS="${1:-300}" cargo bench -p oxiflow-backends --bench store 2>/dev/null
