#!/usr/bin/env bash
# Every figure of the performance budget that issue 2 asks for, side by
# side with the peers, in one run:
#   start.sh   warm run -- true vs bwrap; create + run + destroy; 50 pods
#   diff.sh    diff with 10,000 changes (vs git status); none in 1M files
#   commit.sh  commit of 1 GiB in 10,000 files vs cp -a
#   build.sh   go build -a std in a pod vs on the host
# Needs root, bubblewrap, hyperfine, python3, git. Results: bench/out/
# (hyperfine JSON and figures.tsv) and a markdown table on stdout.
# ONLY="start diff" runs a subset; AIRLOCK_BIN measures a given binary.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${AIRLOCK_BENCH_LOCKED:-}" ]; then
	export AIRLOCK_BENCH_LOCKED=1
	exec flock /tmp/airlock-bench.lock "$0" "$@"
fi
export PATH=/usr/local/go/bin:$PATH
if [ -z "${AIRLOCK_BIN:-}" ]; then
	make -s build
	export AIRLOCK_BIN=$PWD/bin/airlock
fi
out=${AIRLOCK_BENCH_OUT:-$PWD/bench/out}
export AIRLOCK_BENCH_OUT=$out
mkdir -p "$out"
: >"$out/figures.tsv"
{
	echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (working tree has changes)')"
	echo "binary: $AIRLOCK_BIN"
	echo "kernel: $(uname -r); cpus: $(nproc); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
	echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "bwrap: $(bwrap --version); $(hyperfine --version); go: $(go version | cut -d' ' -f3)"
} | tee "$out/machine.txt"
for part in ${ONLY:-start diff commit build}; do
	echo "=== $part"
	"bench/$part.sh"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
echo
echo "| figure | Airlock | peer | target | verdict |"
echo "|---|---|---|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }' "$out/figures.tsv"
