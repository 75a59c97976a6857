#!/usr/bin/env bash
# Generates the Go and Python code for proto/varbridge/v1 into OUT (default: the
# repo itself). protoc comes from the grpcio-tools wheel (PyPI) and the Go
# plugins from the Go module proxy, pinned in tools/go.mod (protoc-gen-go-vtproto
# adds reflection-free Marshal/Unmarshal/Size methods; see internal/codec;
# protoc-gen-connect-go the connect-go handlers internal/httpapi serves).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
py=${PYTHON:-$root/.venv/bin/python}
bin=$root/.bin
mkdir -p "$bin" "$out/proto/varbridge/v1" "$out/python/src/varbridge/v1"
(cd "$root/tools" && go build -o "$bin/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto connectrpc.com/connect/cmd/protoc-gen-connect-go)
wkt=$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
cd "$root/proto"
"$py" -m grpc_tools.protoc -I . -I "$wkt" \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --plugin=protoc-gen-go-vtproto="$bin/protoc-gen-go-vtproto" \
  --plugin=protoc-gen-connect-go="$bin/protoc-gen-connect-go" \
  --go_out="$out/proto" --go_opt=paths=source_relative \
  --go-grpc_out="$out/proto" --go-grpc_opt=paths=source_relative \
  --go-vtproto_out="$out/proto" --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size \
  --connect-go_out="$out/proto" --connect-go_opt=paths=source_relative \
  --python_out="$out/python/src" --pyi_out="$out/python/src" --grpc_python_out="$out/python/src" \
  varbridge/v1/varbridge.proto
