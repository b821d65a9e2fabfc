# Shared set-up for the bench/*.sh scripts (sourced, not run).
#
# Every script takes /tmp/airlock-bench.lock for its whole run, so no two
# benchmarks ever overlap; works in a scratch directory on the same file
# system as the state (so commit can rename); points AIRLOCK_HOME there;
# and on exit destroys its pods, removes the scratch directory and checks
# that no airlock mount was left behind. Figures are appended to
# $out/figures.tsv: figure, ours, peer, target, verdict.
set -euo pipefail
if [ -z "${AIRLOCK_BENCH_LOCKED:-}" ]; then
	export AIRLOCK_BENCH_LOCKED=1
	exec flock /tmp/airlock-bench.lock "$0" "$@"
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH=/usr/local/go/bin:$PATH
command -v hyperfine >/dev/null && command -v bwrap >/dev/null || {
	echo "bench: needs bubblewrap and hyperfine: apt-get install -y bubblewrap hyperfine" >&2
	exit 2
}
[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 2; }
# AIRLOCK_BIN: a binary to measure instead of the working tree's build.
if [ -z "${AIRLOCK_BIN:-}" ]; then
	make -s build
	export AIRLOCK_BIN=$repo/bin/airlock
fi
bin=$AIRLOCK_BIN
out=${AIRLOCK_BENCH_OUT:-$repo/bench/out}
mkdir -p "$out"
scratch=$(mktemp -d /var/tmp/airlock-bench.XXXXXX)
export AIRLOCK_HOME=$scratch/home
mounts_before=$(grep -c airlock /proc/mounts || true)

cleanup() {
	local names
	names=$("$bin" ls --json 2>/dev/null | python3 -c 'import json,sys
try: d=json.load(sys.stdin)
except Exception: sys.exit()
for p in (d if isinstance(d, list) else d.get("pods", [])): print(p["name"])' || true)
	for n in $names; do "$bin" destroy --force "$n" >/dev/null 2>&1 || true; done
	rm -rf "$scratch"
	local after
	after=$(grep -c airlock /proc/mounts || true)
	if [ "$after" != "$mounts_before" ]; then
		echo "bench: WARNING: airlock mounts before $mounts_before, after $after" >&2
	fi
}
trap cleanup EXIT

# stats FILE.json: one line per command: name, median, mean, sd, p10, p90, n (ms).
stats() {
	python3 - "$1" <<'PY'
import json, statistics, sys
for r in json.load(open(sys.argv[1]))["results"]:
    t = sorted(x * 1000 for x in r["times"])
    n = len(t)
    sd = statistics.stdev(t) if n > 1 else 0.0
    print("%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d" % (r["command"], statistics.median(t), statistics.mean(t), sd, t[n // 10], t[(n * 9) // 10], n))
PY
}

# median FILE.json NAME: the median in ms of the named hyperfine command.
median() { stats "$1" | awk -F'\t' -v n="$2" '$1 == n { print $2 }'; }

# figure NAME OURS PEER TARGET VERDICT
figure() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" | tee -a "$out/figures.tsv"; }

# verdict VALUE OP LIMIT: "pass" or "MISS" (op is <= or >=).
verdict() { python3 -c "import sys; v,l=float(sys.argv[1]),float(sys.argv[3]); print('pass' if (v<=l if sys.argv[2]=='<=' else v>=l) else 'MISS')" "$@"; }

# ms START_NS END_NS
ms() { python3 -c "import sys; print('%.1f' % ((int(sys.argv[2]) - int(sys.argv[1])) / 1e6))" "$1" "$2"; }
