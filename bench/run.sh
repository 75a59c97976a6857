#!/usr/bin/env bash
# Builds the varbridge server and the bench harness, makes sure the Python
# helpers' extra dependency (nats-py) is in the venv, and runs the harness
# from the repo root. Flags go to the harness (bench/cmd/vbbench):
#
#   bench/run.sh -out bench/results.json   # make bench: full sizes, 5 runs per figure
#   bench/run.sh -smoke                    # make bench-smoke: tiny sizes, seconds
#   bench/run.sh -only latency -runs 3     # one group (local, latency, durable, writes, http, stream, fanout, idle, cluster)
#   bench/run.sh -perf /tmp/perf -pyprofile /tmp/pyprof   # profiles (see bench/README.md)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PY=${PY:-$root/.venv/bin/python}
NATS_PY_VERSION=2.16.0

go build -o .bin/varbridge ./cmd/varbridge
# -mod=mod: the bench module follows the main module (replace ../), so a
# dependency the main module adds is picked up here without a manual tidy.
(cd bench && go build -mod=mod -o ../.bin/vbbench ./cmd/vbbench)
if ! "$PY" -c 'import nats, varbridge' 2>/dev/null; then
  "$PY" -m pip install --disable-pip-version-check -q "nats-py==$NATS_PY_VERSION"
fi
exec .bin/vbbench -server .bin/varbridge -python "$PY" -pydir bench/py "$@"
