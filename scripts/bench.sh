#!/usr/bin/env bash
# Store benchmarks, printed as markdown tables:
#   scripts/bench.sh [ROUNDS] [store|drain|all]     (defaults: 300, all)
# store: on a real S3-compatible server (moto), started here.
# drain: 8 workers vs 1 draining a pipeline with claim_next, and the requests
#        of reading a 1,000-partition pipeline, on a memory store behind a
#        20 ms round trip (simulating S3), then on moto for reference.
set -euo pipefail
cd "$(dirname "$0")/.."
which="${2:-all}"
case "$which" in store | drain | all) ;; *) echo "usage: scripts/bench.sh [ROUNDS] [store|drain|all]"; exit 2 ;; esac
source scripts/servers.sh
start_moto >/dev/null
if [ "$which" != drain ]; then
  OXIFLOW_BENCH_ROUNDS="${1:-300}" cargo bench -p oxiflow-backends --bench store 2>/dev/null
fi
if [ "$which" != store ]; then
  cargo bench -p oxiflow-backends --bench drain 2>/dev/null
fi
