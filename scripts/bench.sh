#!/usr/bin/env bash
# Store benchmarks, printed as markdown tables:
#   scripts/bench.sh [ROUNDS] [store|drain|redis|all]     (defaults: 300, all)
# store: on a real S3-compatible server (moto), started here.
# drain: 8 workers vs 1 draining a pipeline with claim_next, and the requests
#        of reading a 1,000-partition pipeline, on a memory store behind a
#        20 ms round trip (simulating S3), then on moto for reference.
# redis: round trips per operation, checkpoint latency / a raw SET, 8 workers
#        vs 1, on redis-server processes the benchmark starts (apt-installed
#        when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
which="${2:-all}"
case "$which" in store | drain | redis | all) ;; *) echo "usage: scripts/bench.sh [ROUNDS] [store|drain|redis|all]"; exit 2 ;; esac
source scripts/venv.sh
source scripts/servers.sh
if [ "$which" = store ] || [ "$which" = drain ] || [ "$which" = all ]; then
  start_moto >/dev/null
fi
if [ "$which" = store ] || [ "$which" = all ]; then
  OXIFLOW_BENCH_ROUNDS="${1:-300}" cargo bench -p oxiflow-backends --bench store 2>/dev/null
fi
if [ "$which" = drain ] || [ "$which" = all ]; then
  cargo bench -p oxiflow-backends --bench drain 2>/dev/null
fi
if [ "$which" = redis ] || [ "$which" = all ]; then
  start_redis >/dev/null
  OXIFLOW_BENCH_ROUNDS="${1:-300}" cargo bench -p oxiflow-backends --bench redis 2>/dev/null
fi
