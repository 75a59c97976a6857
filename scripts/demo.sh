#!/usr/bin/env bash
# The live demo: a fresh varbridge server (durable, the default: its data in
# a directory of its own) on a free loopback port,
# a Go controller that tunes `temperature`, and a Python worker that reacts
# by writing `fan_speed`, which the controller reacts to in turn. Both sides
# print as they go; the controller ends with a summary, and the CLI shows the
# session's final state. Everything stops by itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${VARBRIDGE_BIN:-$root/.bin/varbridge}
py=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root" && go build -o "$bin" ./cmd/varbridge && go build -o "$work/controller" ./examples/demo/controller)

# Port 0: the kernel picks a free port and serve prints "listening on ADDR".
# --http-listen "": no HTTP face (its default port may be taken).
"$bin" serve --listen 127.0.0.1:0 --http-listen "" --data-dir "$work/data" --log-level warn >"$work/serve.out" 2>"$work/serve.log" &
pids+=($!)
addr=
for _ in $(seq 1 100); do
  addr=$(awk '/^listening on /{print $3; exit}' "$work/serve.out")
  [[ -n $addr ]] && break
  sleep 0.1
done
if [[ -z $addr ]]; then
  echo "demo: varbridge serve did not start:" >&2
  cat "$work/serve.log" >&2
  exit 1
fi
echo "== varbridge serving on $addr (durable store in a temp data dir, --fsync always)"

"$py" "$root/examples/demo/worker.py" --addr "$addr" &
worker=$!
pids+=("$worker")
timeout 60 "$work/controller" --addr "$addr" --steps "${DEMO_STEPS:-24}"
wait "$worker"

echo
echo "== the session's final state, from the CLI: varbridge list --session demo"
"$bin" list --addr "$addr" --session demo
