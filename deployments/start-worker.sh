#!/usr/bin/env bash
# Start a worker for an ossforge pool, in the foreground (run it under systemd, tmux, nohup...).
#   deployments/start-worker.sh cpu     [NAME]   serves every queue of ossforge-cpu
#   deployments/start-worker.sh shards  [NAME]   serves only the `shards` queue (add these to spread a refresh)
#   deployments/start-worker.sh gpu     [NAME]   kubernetes worker for ossforge-gpu (pip install prefect-kubernetes)
# Environment: PREFECT_API_URL (default http://127.0.0.1:4200/api); WORKER_LIMIT caps the flow
# runs one worker runs at once (default 4 for cpu, 1 for shards); extra arguments go to
# `prefect worker start`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
kind="${1:?usage: start-worker.sh cpu|shards|gpu [NAME] [prefect worker args...]}"
shift
name="${1:-ossforge-$kind-$(hostname -s)-$$}"
[ $# -gt 0 ] && shift
prefect="${PREFECT:-prefect}"
[ -x "$repo/.venv/bin/prefect" ] && [ -z "${PREFECT:-}" ] && prefect="$repo/.venv/bin/prefect"
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:4200/api}"
# Flow runs of a process worker start in the directory recorded by `prefect deploy`; the
# repository must be importable there (flows/, tasks/, ossforge/).
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
cd "$repo"

case "$kind" in
  cpu)    exec "$prefect" worker start --pool ossforge-cpu --type process --name "$name" \
            --limit "${WORKER_LIMIT:-4}" "$@" ;;
  shards) exec "$prefect" worker start --pool ossforge-cpu --type process --work-queue shards --name "$name" \
            --limit "${WORKER_LIMIT:-1}" "$@" ;;
  gpu)    exec "$prefect" worker start --pool ossforge-gpu --type kubernetes --name "$name" \
            --limit "${WORKER_LIMIT:-1}" "$@" ;;
  *) echo "unknown worker kind $kind (cpu|shards|gpu)" >&2; exit 2 ;;
esac
