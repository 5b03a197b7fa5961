#!/usr/bin/env bash
# Scheduled, restartable refit with the daskem CLI: one model per day, with a
# checkpoint after every EM iteration so that a failed run (lost cluster,
# preemption, reboot) continues where it stopped the next time it is started.
#
# crontab line (every night at 02:15, against a running Dask cluster):
#
#   15 2 * * *  DASK_SCHEDULER_ADDRESS=tcp://10.0.0.5:8786 /srv/daskem/examples/scheduled_batch.sh /data/features.zarr /data/models >> /var/log/daskem-refit.log 2>&1
#
# Usage: scheduled_batch.sh [DATA] [OUT_DIR]
#   DATA     Zarr/Parquet/.npy path or URL (readable by the workers). Without it,
#            a small synthetic Zarr dataset of $DASKEM_EXAMPLE_ROWS rows is made.
#   OUT_DIR  where models and checkpoints go (default: a new temporary directory).
# Cluster: DASK_SCHEDULER_ADDRESS if set (the CLI reads it), else a local cluster
# sized by DASKEM_LOCAL_CLUSTER (e.g. "--workers 2 --threads-per-worker 2").
#
# Exit codes are daskem's: 0 ok, 2 bad input (not retried), 1 failure after
# all retries (rerun later: it resumes), 3 not converged (--strict).
set -euo pipefail

DATA=${1:-}
OUT_DIR=${2:-${DASKEM_EXAMPLE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/daskem-batch-XXXXXX")}}
N_COMPONENTS=${DASKEM_N_COMPONENTS:-4}
ATTEMPTS=${DASKEM_ATTEMPTS:-3}
RUN=$(date +%Y-%m-%d)
MODEL="$OUT_DIR/model-$RUN.npz"
CHECKPOINT="$OUT_DIR/checkpoint-$RUN"
mkdir -p "$OUT_DIR"

# Never two runs at once (a slow run still going when cron starts the next one).
exec 9>"$OUT_DIR/.daskem-refit.lock"
if command -v flock >/dev/null && ! flock -n 9; then
    echo "$(date -Is) another refit is running in $OUT_DIR; nothing to do"
    exit 0
fi

if [ -e "$MODEL" ]; then
    echo "$(date -Is) $MODEL already exists; nothing to do"
    exit 0
fi

if [ -z "$DATA" ]; then
    DATA="$OUT_DIR/example-data.zarr"
    if [ ! -e "$DATA" ]; then
        python - "$DATA" "${DASKEM_EXAMPLE_ROWS:-200000}" <<'PY'
import sys
import numpy as np
from daskem.io import write_zarr
path, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
centres = rng.uniform(-8, 8, size=(4, 3))
X = centres[rng.integers(4, size=n)] + rng.standard_normal((n, 3))
write_zarr(X, path)
PY
        echo "$(date -Is) wrote example data to $DATA"
    fi
fi

# shellcheck disable=SC2086  # DASKEM_LOCAL_CLUSTER is a list of options
for attempt in $(seq "$ATTEMPTS"); do
    echo "$(date -Is) refit $RUN, attempt $attempt/$ATTEMPTS"
    set +e
    daskem fit "$DATA" --n-components "$N_COMPONENTS" --covariance-type full --random-state 0 \
        --checkpoint "$CHECKPOINT" --resume --out "$MODEL" --log-json ${DASKEM_LOCAL_CLUSTER:-}
    rc=$?
    set -e
    case $rc in
        0) break ;;
        2) echo "$(date -Is) bad input or options; not retrying" >&2; exit 2 ;;
        3) echo "$(date -Is) the fit did not converge" >&2; exit 3 ;;
        *) echo "$(date -Is) daskem fit failed (exit $rc); the checkpoint is kept" >&2
           [ "$attempt" -lt "$ATTEMPTS" ] || exit "$rc"
           sleep "${DASKEM_RETRY_DELAY:-30}" ;;
    esac
done

ln -sfn "model-$RUN.npz" "$OUT_DIR/model-latest.npz"
daskem info "$MODEL"
echo "$(date -Is) model written to $MODEL"
