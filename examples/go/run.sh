#!/usr/bin/env bash
# Generates the Go code from proto/veza/*.proto, builds the client and runs it, all offline from
# Debian's packages: golang-go, protobuf-compiler, protoc-gen-go, protoc-gen-go-grpc,
# golang-google-grpc-dev, golang-google-protobuf-dev. GOPATH mode: the generated packages go to
# .gopath/src (gitignored), the libraries come from /usr/share/gocode.
#   ./run.sh           VEZA_ADDR=localhost:9090 and the other variables of client.go
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
proto=$here/../../proto

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run.sh: $tool is missing: apt-get install golang-go protobuf-compiler protoc-gen-go" \
      "protoc-gen-go-grpc golang-google-grpc-dev golang-google-protobuf-dev" >&2
    exit 127
  fi
done

export GO111MODULE=off GOFLAGS= GOPROXY=off
export GOPATH="$here/.gopath:${VEZA_GOCODE:-/usr/share/gocode}"
export GOCACHE="${GOCACHE:-$here/.gopath/cache}"

rm -rf .gopath/src
mkdir -p .gopath/src .gopath/bin
protoc -I "$proto" --go_out=.gopath/src --go-grpc_out=.gopath/src "$proto"/veza/*.proto
go build -o .gopath/bin/veza-go-client client.go
exec .gopath/bin/veza-go-client "$@"
