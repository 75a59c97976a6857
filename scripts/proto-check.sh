#!/usr/bin/env bash
# Fails when the committed generated code (Go and Python) differs from what
# scripts/genproto.sh produces from proto/ now, i.e. when someone edited the
# .proto without running `make proto`, or edited generated files by hand.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$root/scripts/genproto.sh" "$tmp"

# The files genproto writes, and the committed files that look generated.
gen_dirs=(proto/varbridge/v1 python/src/varbridge/v1)
stale=0
for d in "${gen_dirs[@]}"; do
  while IFS= read -r f; do
    rel=${f#"$tmp"/}
    if [[ ! -f "$root/$rel" ]]; then
      echo "proto-check: $rel is generated but missing from the repo" >&2
      stale=1
    elif ! diff -u "$root/$rel" "$f" >"$tmp/.diff" 2>&1; then
      echo "proto-check: $rel is stale; diff (committed -> regenerated):" >&2
      head -n 40 "$tmp/.diff" >&2
      stale=1
    fi
  done < <(find "$tmp/$d" -type f | sort)
  while IFS= read -r f; do
    rel=${f#"$root"/}
    if [[ ! -f "$tmp/$rel" ]]; then
      echo "proto-check: $rel looks generated but genproto no longer produces it" >&2
      stale=1
    fi
  done < <(find "$root/$d" -type f \( -name '*.pb.go' -o -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) | sort)
done

if [[ $stale -ne 0 ]]; then
  echo "proto-check: FAILED: generated code is stale; run 'make proto' and commit the result." >&2
  exit 1
fi
echo "proto-check: generated Go and Python code is up to date."
