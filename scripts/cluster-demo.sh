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

# Every process started, by tier: stopped clients first, then servers, then
# etcd, so that no server waits on an etcd already gone. Each runs in a
# session of its own (setsid, where there is one): Ctrl-C reaches this script
# alone, and cleanup stops the rest in that order.
tier_etcd=() tier_servers=() tier_clients=()
detach=()
command -v setsid >/dev/null && detach=(setsid)
# stop PID...: SIGTERM, then SIGKILL what is left after 5 s.
stop() {
  local p alive
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
}
cleanup() {
  local status=$? f
  trap - EXIT INT TERM
  stop "${tier_clients[@]}" "${tier_servers[@]}"
  # etcd members told to stop together wait seconds for one another (the
  # leader hands over first); their data is thrown away, so they are killed.
  for f in "${tier_etcd[@]}"; do kill -KILL "$f" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((status == 130 || status == 143)); then
    echo "cluster-demo: interrupted; everything it started is stopped" >&2
  elif ((status != 0)); then
    echo "cluster-demo: FAILED (exit $status); logs:" >&2
    for f in "$work"/*.log; do
      [[ -s $f ]] || continue
      echo "--- $(basename "$f") (last 15 lines)" >&2
      tail -n 15 "$f" >&2
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
command -v curl >/dev/null || fail "needs curl (it asks the servers which watches they hold)"

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
    "${detach[@]}" "$etcd" --name "m$i" --data-dir "$work/etcd-m$i-try$attempt" \
      --listen-client-urls "http://$client" --advertise-client-urls "http://$client" \
      --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token "varbridge-cluster-demo-$$-$attempt" \
      --log-level warn >"$work/etcd-m$i.log" 2>&1 &
    etcd_pids+=($!)
    tier_etcd+=($!)
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
declare -A pid=() addr=() http=() holds=() # by server name, A or B
# Port 0: the kernel picks; serve prints "listening on ADDR" and "http on URL".
start_server() { # NAME
  "${detach[@]}" "$bin" serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --etcd-endpoints "$endpoints" \
    --drain-timeout 1s --log-level warn >"$work/$1.out" 2>"$work/server-$1.log" &
  tier_servers+=($!)
  pid[$1]=$!
}
server_up() { # NAME
  grep -q '^listening on ' "$work/$1.out" && grep -q '^http on ' "$work/$1.out"
}
start_server A
start_server B
for s in A B; do
  wait_for 20 server_up "$s" || fail "varbridge server $s did not start"
  addr[$s]=$(awk '/^listening on /{print $3; exit}' "$work/$s.out")
  http[$s]=$(awk '/^http on /{print $3; exit}' "$work/$s.out")
done
say "varbridge servers up on etcd: A on ${addr[A]} (pid ${pid[A]}), B on ${addr[B]} (pid ${pid[B]})"

# watches NAME: which of the demo's watches server NAME holds, from
# ListWatches (a server lists the watches it serves itself).
watches() {
  local out who=()
  out=$(curl -sf --max-time 2 -H 'Content-Type: application/json' -d '{"sessionId":"demo"}' \
    "${http[$1]}/varbridge.v1.BridgeService/ListWatches") || {
    echo "unknown (ListWatches failed)"
    return
  }
  grep -q '"fan_speed"' <<<"$out" && who+=("the Go controller's watch")
  grep -q '"temperature"' <<<"$out" && who+=("the Python worker's watch")
  case ${#who[@]} in
  0) echo "no watch" ;;
  1) echo "${who[0]}" ;;
  *) echo "${who[0]} and ${who[1]}" ;;
  esac
}

# --- 3. the demo's two sides, each given both servers -------------------------
say "Python worker on B,A; Go controller on A,B ($steps changes, killing a server after $((steps / 2)))"
"${detach[@]}" "$py" "$root/examples/demo/worker.py" --addr "${addr[B]},${addr[A]}" &
worker=$!
tier_clients+=("$worker")
pause=$work/pause
timeout 150 "$work/controller" --addr "${addr[A]},${addr[B]}" --steps "$steps" --interval "$interval" \
  --pause-at $((steps / 2)) --pause-file "$pause" &
controller=$!
tier_clients+=("$controller")

paused() { [[ -e $pause ]]; }
for _ in $(seq 1 1200); do # 120 s
  paused && break
  kill -0 "$controller" 2>/dev/null || break
  sleep 0.1
done
paused || fail "the controller did not reach half-way"

# --- 4. kill the server holding the controller's watch ------------------------
holds[A]=$(watches A)
holds[B]=$(watches B)
say "half-way: server A holds ${holds[A]}; server B holds ${holds[B]}"
if [[ ${holds[A]} == *"Go controller"* ]]; then
  victim=A survivor=B
elif [[ ${holds[B]} == *"Go controller"* ]]; then
  victim=B survivor=A
else
  fail "neither server lists the controller's watch"
fi
say "kill -9 server $victim (${addr[$victim]}, pid ${pid[$victim]}): the Go controller's server"
{ # (bash would report the job it reaps as "Killed")
  kill -KILL "${pid[$victim]}"
  wait "${pid[$victim]}" || true
} 2>/dev/null
tier_servers=("${pid[$survivor]}") # the victim is reaped: its pid is never signalled again
t0=$(date +%s%N)
both_on_survivor() {
  local w
  w=$(watches "$survivor")
  [[ $w == *"Go controller"* && $w == *"Python worker"* ]]
}
wait_for 20 both_on_survivor || fail "the watches did not move to server $survivor: it holds $(watches "$survivor")"
ms=$((($(date +%s%N) - t0) / 1000000))
say "failover seen: server $survivor (${addr[$survivor]}) now holds $(watches "$survivor") (${ms} ms after the kill)"
rm -f "$pause"

# --- 5. the rest of the demo, on the server left -------------------------------
status=0
wait "$controller" || status=$?
((status == 0)) || fail "the controller failed (exit $status)"
for _ in $(seq 1 200); do # 20 s
  kill -0 "$worker" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$worker" 2>/dev/null && fail "the Python worker did not stop"
wstatus=0
wait "$worker" || wstatus=$?
((wstatus == 0)) || fail "the Python worker failed (exit $wstatus)"

echo
say "the session's final state, from the CLI given both servers (server $victim is dead): varbridge list --addr ${addr[A]},${addr[B]} --session demo"
"$bin" list --addr "${addr[A]},${addr[B]}" --session demo

echo
say "cluster summary"
echo "etcd:         3 members ($endpoints)"
echo "servers:      A ${addr[A]}, B ${addr[B]}; server $victim SIGKILLed half-way"
echo "Go watch:     on server $victim until the kill, then on server $survivor"
if [[ ${holds[$victim]} == *"Python worker"* ]]; then
  echo "Python watch: on server $victim until the kill, then on server $survivor"
else
  echo "Python watch: on server $survivor throughout"
fi
echo "failover:     server $survivor held both watches ${ms} ms after the kill; the rest ran through it"
echo "check:        passed (the summary above: every write seen once by the other side, in order)"
