#!/usr/bin/env bash
# Create (or update) the ossforge work pools on the Prefect server at $PREFECT_API_URL.
#   ossforge-cpu  process pool: refresh, shard, dedup, decontaminate flow runs as local processes
#   ossforge-gpu  kubernetes pool: training flow runs as Jobs that request NVIDIA GPUs
# Usage: deployments/create-pools.sh [cpu|gpu|all]   (default all)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
prefect="${PREFECT:-prefect}"
[ -x "$repo/.venv/bin/prefect" ] && [ -z "${PREFECT:-}" ] && prefect="$repo/.venv/bin/prefect"
which="${1:-all}"

if [ "$which" = cpu ] || [ "$which" = all ]; then
  "$prefect" --no-prompt work-pool create ossforge-cpu --type process \
    --base-job-template "$here/process-pool.json" --overwrite
  # Shards go to their own queue, so shard-only workers can be added (start-worker.sh shards).
  "$prefect" --no-prompt work-queue create shards --pool ossforge-cpu >/dev/null 2>&1 || true
fi
if [ "$which" = gpu ] || [ "$which" = all ]; then
  # Only the server needs to know this pool; the worker that serves it needs prefect-kubernetes.
  "$prefect" --no-prompt work-pool create ossforge-gpu --type kubernetes \
    --base-job-template "$here/gpu-pool-kubernetes.json" --overwrite
fi
