#!/usr/bin/env bash
# A real build inside a pod against the same build on the host, in one
# run: `go build -a std` (the Go project's standard library, ~300
# packages, compiled from source with a cold build cache inside the
# workspace), so the build reads the toolchain through the pod's
# read-only view and writes every object through the copy-on-write layer.
# Host and pod builds alternate (ROUNDS each, default 3) so that a change
# in the machine's load hits both alike.
source "$(dirname "$0")/lib.sh"
rounds=${ROUNDS:-3}
ws=$scratch/ws
mkdir -p "$ws"
"$bin" init build --workspace "$ws" >/dev/null
go=$(command -v go)
cmd=(env GOCACHE="$ws/cache" GOFLAGS= CGO_ENABLED=0 "$go" build -a std)
host=() pod=()
for r in $(seq 1 "$rounds"); do
	rm -rf "$ws/cache"; sync
	s=$(date +%s%N); "${cmd[@]}"; e=$(date +%s%N)
	host+=("$(ms "$s" "$e")")
	"$bin" rollback build >/dev/null; sync
	s=$(date +%s%N); "$bin" run build -T -- "${cmd[@]}"; e=$(date +%s%N)
	pod+=("$(ms "$s" "$e")")
	[ -n "$("$bin" diff build | head -1 | grep cache)" ] || { echo "bench: the pod's build left no cache in its layer" >&2; exit 1; }
done
echo "host (ms): ${host[*]}"
echo "pod  (ms): ${pod[*]}"
read -r hm hs pm ps ratio < <(python3 - "${host[*]}" "${pod[*]}" <<'PY'
import statistics, sys
h = [float(x) for x in sys.argv[1].split()]
p = [float(x) for x in sys.argv[2].split()]
sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
print("%.0f %.0f %.0f %.0f %.3f" % (statistics.mean(h), sd(h), statistics.mean(p), sd(p), statistics.mean(p) / statistics.mean(h)))
PY
)
figure "go build -a std in the pod vs host, mean ms" "$pm ± $ps" "host $hm ± $hs" "within 5%" "$(verdict "$ratio" '<=' 1.05) (${ratio}x)"
