#!/usr/bin/env bash
# A scripted CLI session against a real `varbridge serve` on a free loopback
# port: register, set, a write its constraint rejects, get by id and by name,
# list, an atomic batch and a compare-and-set with a stale version.
# Each command is echoed before its output; the server is stopped at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${VARBRIDGE_BIN:-$root/.bin/varbridge}
if [[ -z ${VARBRIDGE_BIN:-} ]]; then
  (cd "$root" && go build -o "$bin" ./cmd/varbridge)
fi

work=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Port 0: the kernel picks a free port and serve prints "listening on ADDR".
"$bin" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.log" &
server_pid=$!
addr=
for _ in $(seq 1 100); do
  addr=$(awk '/^listening on /{print $3; exit}' "$work/serve.out")
  [[ -n $addr ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "demo: varbridge serve exited early:" >&2
    cat "$work/serve.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z $addr ]]; then
  echo "demo: varbridge serve did not report its address within 10s" >&2
  cat "$work/serve.log" >&2
  exit 1
fi

section() { printf '\n== %s\n' "$*"; }

# shown prints its arguments as one would type them in a shell.
shown() {
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_.,:=/+@%-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${out[*]}"
}

# vb runs the CLI against the demo server and must succeed.
vb() {
  printf '$ varbridge %s\n' "$(shown "$@")"
  "$bin" --addr "$addr" --session demo "$@"
}

# vb_fails runs the CLI and must fail; its error (stderr) is shown.
vb_fails() {
  printf '$ varbridge %s   # expected to fail\n' "$(shown "$@")"
  if "$bin" --addr "$addr" --session demo "$@" 2>"$work/err"; then
    echo "demo: the command above should have failed" >&2
    exit 1
  fi
  sed 's/^/  /' "$work/err"
}

echo "varbridge serve is listening on $addr (session \"demo\")"

section "Register typed variables (the session is created on first use)"
vb register temperature float 0.7 --min 0 --max 2 --meta owner=controller
vb register model choice gpt-4 --choices gpt-4,claude,llama
vb register query_vec embedding '[0.1,0.2,0.3]' --dimensions 3

section "Write within the constraint"
vb set temperature 0.9 --source tuner --meta reason=warmer

section "A write that violates max=2 changes nothing: InvalidArgument"
vb_fails set temperature 3.5
vb get temperature

section "Read by name and by id"
id=$("$bin" --addr "$addr" --session demo --json get temperature |
  awk -F'"' '/"id":/{print $4; exit}')
vb get temperature
vb get "$id"

section "List the session"
vb list

section "Atomic batch: both change at one revision"
vb set --batch temperature=1.2 model=claude

section "Compare-and-set with a stale expected_version: FailedPrecondition"
vb_fails set temperature 1.5 --expected-version 2
vb set temperature 1.5 --expected-version 3

section "Session"
vb session get demo

echo
echo "demo: done"
