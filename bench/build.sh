#!/usr/bin/env bash
# A real build inside a pod against the same build on the host, in one
# run: `go build -a std` (the Go project's standard library, ~300
# packages) with a cold build cache inside the workspace, so the build
# reads the toolchain through the pod's read-only view and writes every
# object through the copy-on-write layer. Needs root and hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build
bin=$PWD/bin/airlock
runs=${RUNS:-3}
scratch=$(mktemp -d /var/tmp/airlock-build.XXXXXX)
export AIRLOCK_HOME=$scratch/home
trap '"$bin" destroy --force build >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
ws=$scratch/ws
mkdir -p "$ws"
"$bin" init build --workspace "$ws" >/dev/null
go=$(command -v go)
cmd="env GOCACHE=$ws/cache GOFLAGS= CGO_ENABLED=0 $go build -a std"
mkdir -p bench/out
hyperfine --runs "$runs" --export-json bench/out/build.json \
	--prepare "rm -rf $ws/cache" -n "host: go build -a std" "$cmd" \
	--prepare "$bin rollback build >/dev/null" -n "pod:  go build -a std" "$bin run build -T -- $cmd"
