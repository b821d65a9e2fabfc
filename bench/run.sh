#!/usr/bin/env bash
# Side-by-side benchmarks of airlock against its peers, in one run.
# Needs root, bubblewrap and hyperfine (apt-get install bubblewrap hyperfine).
# Results: bench/out/*.json (hyperfine) and a summary on stdout that
# docs/BENCHMARKS.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bwrap >/dev/null && command -v hyperfine >/dev/null || {
	echo "bench: needs bubblewrap and hyperfine: apt-get install -y bubblewrap hyperfine" >&2; exit 2; }
make -s build
bin=$PWD/bin/airlock
out=$PWD/bench/out
mkdir -p "$out"
scratch=$(mktemp -d /var/tmp/airlock-bench.XXXXXX)
trap 'AIRLOCK_HOME=$scratch/home "$bin" destroy --force warm >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
export AIRLOCK_HOME=$scratch/home
ws=$scratch/ws
mkdir -p "$ws" "$scratch/bw-upper" "$scratch/bw-work"
echo hello > "$ws/file"

"$bin" init warm --workspace "$ws" >/dev/null
"$bin" run warm -- true

# bubblewrap doing the nearest equivalent walls: new pid/ipc/uts/net (and
# mount) namespaces, system dirs read-only, the workspace as a persistent
# overlay, fresh /proc, minimal /dev, private /tmp, new session, no caps.
bw=(bwrap --unshare-pid --unshare-ipc --unshare-uts --unshare-net --die-with-parent --new-session
	--cap-drop ALL --hostname warm
	--ro-bind /usr /usr --ro-bind /etc /etc --symlink usr/bin /bin --symlink usr/lib /lib
	--symlink usr/lib64 /lib64 --symlink usr/sbin /sbin
	--bind "$ws" "$ws"
	--proc /proc --dev /dev --tmpfs /tmp --tmpfs /run --chdir "$ws" true)

echo "== warm run -- true (airlock vs bwrap)"
hyperfine -N --warmup 20 --runs 300 --export-json "$out/run-true.json" \
	-n "airlock run warm -- true" "$bin run warm -T -- true" \
	-n "bwrap (same walls) true" "${bw[*]}" | grep -E "Time|±|Benchmark" || true

echo "== fresh create + run + destroy"
cat > "$scratch/crd.sh" <<SH
#!/bin/sh
set -e
"$bin" init crd --workspace "$ws" >/dev/null
"$bin" run crd -T -- true
"$bin" destroy crd >/dev/null
SH
chmod +x "$scratch/crd.sh"
hyperfine -N --warmup 3 --runs 50 --export-json "$out/create-run-destroy.json" \
	-n "init+run+destroy" "$scratch/crd.sh" \
	-n "sh startup (subtract)" "/bin/sh -c true" | grep -E "Time|Benchmark" || true

echo "== 50 pods created"
start=$(date +%s%N)
for i in $(seq 1 50); do "$bin" init "p$i" --workspace "$ws" >/dev/null; done
end=$(date +%s%N)
echo "50 pods created in $(( (end - start) / 1000000 )) ms"
for i in $(seq 1 50); do "$bin" destroy "p$i" >/dev/null; done

python3 - "$out" <<'PY'
import json, sys, statistics, os
out = sys.argv[1]
for f in ("run-true.json", "create-run-destroy.json"):
    d = json.load(open(os.path.join(out, f)))
    for r in d["results"]:
        ts = sorted(r["times"])
        print(f"{r['command']:<28} median {statistics.median(ts)*1000:7.2f} ms   p90 {ts[int(len(ts)*0.9)]*1000:7.2f} ms")
PY
