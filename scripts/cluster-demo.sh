#!/usr/bin/env bash
# The cluster demo (`make cluster-demo`): the live demo of scripts/demo.sh
# (the same Go controller and Python worker, examples/demo) on two varbridge
# servers that keep their sessions in a three-member etcd cluster, one of
# which is killed half-way.
#
#   1. three .bin/etcd processes on free loopback ports form a cluster, their
#      data in a temporary directory;
#   2. two varbridge servers, A and B, serve from it (--etcd-endpoints);
#   3. the Go controller is given A,B and the Python worker B,A: each may use
#      either, and their calls spread over both (round_robin), while a watch
#      stream stays on the server it opened on;
#   4. half-way the controller pauses between two exchanges (no write in
#      flight), the script asks each server which watches it holds
#      (ListWatches over its HTTP face), SIGKILLs the server holding the
#      controller's watch, and waits until that watch shows up on the other;
#   5. the controller goes on through the server left; its summary checks
#      that each side saw every write of the other exactly once, in order.
#
# Everything started is stopped on exit, also on failure or Ctrl-C; every
# wait is bounded. Exits non-zero when a check fails. DEMO_STEPS (default
# 24) and DEMO_INTERVAL (default 400ms) size the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${VARBRIDGE_BIN:-$root/.bin/varbridge}
etcd=${VARBRIDGE_ETCD_BIN:-$root/.bin/etcd}
py=${PYTHON:-$root/.venv/bin/python}
steps=${DEMO_STEPS:-24}
interval=${DEMO_INTERVAL:-400ms}
work=$(mktemp -d "${TMPDIR:-/tmp}/varbridge-cluster-demo.XXXXXX")

pids=() # every process started, stopped by cleanup
cleanup() {
  local status=$? p
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # Bounded: what has not stopped after 5 s is killed.
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((status != 0)); then
    echo "cluster-demo: FAILED (exit $status); logs:" >&2
    for f in "$work"/*.log; do
      [[ -s $f ]] || continue
      echo "--- $(basename "$f") (last 20 lines)" >&2
      tail -n 20 "$f" >&2
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { printf '== %s\n' "$*"; }
fail() {
  echo "cluster-demo: $*" >&2
  exit 1
}

# wait_for SECONDS COMMAND...: run COMMAND every 0.1 s until it succeeds.
wait_for() {
  local tries=$(($1 * 10))
  shift
  for _ in $(seq 1 "$tries"); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# free_ports N: N loopback ports free right now (held together while picked,
# so they differ).
free_ports() {
  "$py" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

(cd "$root" && go build -o "$work/controller" ./examples/demo/controller)
[[ -x $bin && -x $etcd ]] || fail "$bin or $etcd missing: run make build"

# --- 1. etcd: three members ---------------------------------------------------
etcd_pids=()
endpoints=
etcd_ready() {
  local e
  for e in ${endpoints//,/ }; do
    curl -sf --max-time 1 "http://$e/readyz" >/dev/null || return 1
  done
}
etcd_running() {
  local p
  for p in "${etcd_pids[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
}
# A port free when picked may be taken before etcd binds it: such a start is
# retried on other ports.
for attempt in 1 2 3; do
  read -r -a ports <<<"$(free_ports 6)"
  initial=
  endpoints=
  for i in 0 1 2; do
    initial+="${initial:+,}m$i=http://127.0.0.1:${ports[2 * i + 1]}"
    endpoints+="${endpoints:+,}127.0.0.1:${ports[2 * i]}"
  done
  etcd_pids=()
  for i in 0 1 2; do
    client=127.0.0.1:${ports[2 * i]}
    peer=127.0.0.1:${ports[2 * i + 1]}
    "$etcd" --name "m$i" --data-dir "$work/etcd-m$i-try$attempt" \
      --listen-client-urls "http://$client" --advertise-client-urls "http://$client" \
      --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token "varbridge-cluster-demo-$$-$attempt" \
      --log-level warn >"$work/etcd-m$i.log" 2>&1 &
    etcd_pids+=($!)
    pids+=($!)
  done
  ok=0
  for _ in $(seq 1 300); do # 30 s
    etcd_running || break
    if etcd_ready; then
      ok=1
      break
    fi
    sleep 0.1
  done
  ((ok)) && break
  for p in "${etcd_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if ((attempt == 3)) || ! grep -qs 'address already in use' "$work"/etcd-m*.log; then
    fail "etcd did not start (attempt $attempt)"
  fi
  echo "cluster-demo: an etcd port was taken; trying others" >&2
done
say "etcd cluster up: 3 members, clients on $endpoints"

# --- 2. two varbridge servers on it -------------------------------------------
# Port 0: the kernel picks; serve prints "listening on ADDR" and "http on URL".
start_server() { # NAME
  "$bin" serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --etcd-endpoints "$endpoints" \
    --drain-timeout 1s --log-level warn >"$work/$1.out" 2>"$work/server-$1.log" &
  pids+=($!)
  eval "pid_$1=$!"
}
server_up() { # NAME
  grep -q '^listening on ' "$work/$1.out" && grep -q '^http on ' "$work/$1.out"
}
start_server A
start_server B
for s in A B; do
  wait_for 20 server_up "$s" || fail "varbridge server $s did not start"
  eval "addr_$s=\$(awk '/^listening on /{print \$3; exit}' \"\$work/$s.out\")"
  eval "http_$s=\$(awk '/^http on /{print \$3; exit}' \"\$work/$s.out\")"
done
# shellcheck disable=SC2154 # set by the eval above
say "varbridge servers up on etcd: A on $addr_A (pid $pid_A), B on $addr_B (pid $pid_B)"

# watches NAME: which of the demo's watches server NAME holds, from
# ListWatches (a server lists the watches it serves itself).
watches() {
  local url out who=()
  url=$(eval "echo \$http_$1")
  out=$(curl -sf --max-time 2 -H 'Content-Type: application/json' -d '{"sessionId":"demo"}' \
    "$url/varbridge.v1.BridgeService/ListWatches") || {
    echo "unknown (ListWatches failed)"
    return
  }
  grep -q '"fan_speed"' <<<"$out" && who+=("the Go controller's watch")
  grep -q '"temperature"' <<<"$out" && who+=("the Python worker's watch")
  if ((${#who[@]} == 0)); then echo "no watch"; else
    local IFS=,
    echo "${who[*]}" | sed 's/,/ and /'
  fi
}

# --- 3. the demo's two sides, each given both servers -------------------------
say "Python worker on B,A; Go controller on A,B ($steps changes, killing a server after $((steps / 2)))"
"$py" "$root/examples/demo/worker.py" --addr "$addr_B,$addr_A" &
worker=$!
pids+=("$worker")
pause=$work/pause
timeout 150 "$work/controller" --addr "$addr_A,$addr_B" --steps "$steps" --interval "$interval" \
  --pause-at $((steps / 2)) --pause-file "$pause" &
controller=$!
pids+=("$controller")

paused() { [[ -e $pause ]]; }
controller_alive() { kill -0 "$controller" 2>/dev/null; }
for _ in $(seq 1 1200); do # 120 s
  paused && break
  controller_alive || break
  sleep 0.1
done
paused || fail "the controller did not reach half-way"

# --- 4. kill the server holding the controller's watch ------------------------
on_A=$(watches A)
on_B=$(watches B)
say "half-way: server A holds $on_A; server B holds $on_B"
if [[ $on_A == *"Go controller"* ]]; then
  victim=A survivor=B
elif [[ $on_B == *"Go controller"* ]]; then
  victim=B survivor=A
else
  fail "neither server lists the controller's watch"
fi
victim_pid=$(eval "echo \$pid_$victim")
victim_addr=$(eval "echo \$addr_$victim")
survivor_addr=$(eval "echo \$addr_$survivor")
victim_held=$(eval "echo \$on_$victim")
say "kill -9 server $victim ($victim_addr, pid $victim_pid): the Go controller's server"
kill -KILL "$victim_pid"
wait "$victim_pid" 2>/dev/null || true
t0=$(date +%s%N)
both_on_survivor() {
  local w
  w=$(watches "$survivor")
  [[ $w == *"Go controller"* && $w == *"Python worker"* ]]
}
wait_for 20 both_on_survivor || fail "the watches did not move to server $survivor: it holds $(watches "$survivor")"
ms=$((($(date +%s%N) - t0) / 1000000))
say "failover seen: server $survivor ($survivor_addr) now holds $(watches "$survivor") (${ms} ms after the kill)"
rm -f "$pause"

# --- 5. the rest of the demo, on the server left -------------------------------
status=0
wait "$controller" || status=$?
((status == 0)) || fail "the controller failed (exit $status)"
for _ in $(seq 1 200); do # 20 s
  kill -0 "$worker" 2>/dev/null || break
  sleep 0.1
done
wstatus=0
wait "$worker" || wstatus=$?
((wstatus == 0)) || fail "the Python worker failed (exit $wstatus)"

echo
say "the session's final state, from the CLI given both servers (server $victim is dead): varbridge list --addr $addr_A,$addr_B --session demo"
"$bin" list --addr "$addr_A,$addr_B" --session demo

echo
say "cluster summary"
echo "etcd:         3 members ($endpoints)"
echo "servers:      A $addr_A, B $addr_B; server $victim SIGKILLed half-way (it held $victim_held)"
echo "failover:     server $survivor held both watches ${ms} ms after the kill; the rest ran through it"
echo "check:        passed (the summary above: every write seen once by the other side, in order)"
