#!/usr/bin/env bash
# `airlock diff` end to end (the binary, as a user runs it), in one run:
#   - 10,000 changes made inside a pod (5,000 files rewritten at the same
#     size, 2,500 grown, 2,500 added, in 100 directories), against
#     `git status` seeing the same changes in a git checkout of the tree;
#   - no changes in a 1,000,000-file workspace (the tree is built once and
#     cached at $AIRLOCK_BENCH_1M, default /tmp/airlock-bench-1m/v1, the
#     same tree the Go benchmark uses);
#   - the fixed cost: diff of an unchanged 10-file workspace.
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-30}

# The 10k tree: 100 dirs x 75 files; the pod changes all of them and adds
# 25 per directory.
mkws() {
	python3 - "$1" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/dir{d:03d}", exist_ok=True)
    for f in range(75):
        with open(f"{root}/dir{d:03d}/file{f:03d}.go", "w") as fh:
            fh.write(f"package p // dir{d:03d}/file{f:03d}.go original content, some bytes to compare\n")
PY
}
ws=$scratch/ws10k
mkws "$ws"
cat >"$scratch/change.py" <<'PY'
import sys
root = sys.argv[1]
for d in range(100):
    for f in range(100):
        p = f"{root}/dir{d:03d}/file{f:03d}.go"
        payload = f"package p // dir{d:03d}/file{f:03d}.go original content, some bytes to compare\n"
        if f < 50:
            open(p, "w").write(payload[:-2] + "X\n")
        elif f < 75:
            open(p, "a").write("// more\n")
        else:
            open(p, "w").write(payload)
PY
cp -a "$ws" "$scratch/git10k"
(cd "$scratch/git10k" && git init -q && git add -A && git -c user.email=b@b -c user.name=b commit -qm base &&
	python3 "$scratch/change.py" . && git status --porcelain | wc -l | grep -qx 10000)
cp "$scratch/change.py" "$ws/.change.py" # the pod sees only its workspace and home
"$bin" init d10k --workspace "$ws" >/dev/null
"$bin" run d10k -T -- python3 "$ws/.change.py" "$ws"
n=$("$bin" diff d10k | grep -c '^[AM] ')
[ "$n" = 10000 ] || { echo "bench: diff d10k shows $n changes, want 10000" >&2; exit 1; }
# The same pod without the disk wall (resources.disk 0): its layer is a
# plain directory in the state dir instead of an ext4 image mounted for
# each command.
printf 'version: 1\nresources:\n  disk:\n    bytes: 0\n    inodes: 0\n' >"$scratch/nodisk.yaml"
ws2=$scratch/ws10k-nodisk
mkws "$ws2"
cp "$scratch/change.py" "$ws2/.change.py"
"$bin" init d10knd --workspace "$ws2" --config "$scratch/nodisk.yaml" >/dev/null
"$bin" run d10knd -T -- python3 "$ws2/.change.py" "$ws2"
n=$("$bin" diff d10knd | grep -c '^[AM] ')
[ "$n" = 10000 ] || { echo "bench: diff d10knd shows $n changes, want 10000" >&2; exit 1; }

big=${AIRLOCK_BENCH_1M:-/tmp/airlock-bench-1m/v1}
python3 bench/mktree.py "$big" 1000000
"$bin" init d1m --workspace "$big" >/dev/null
"$bin" run d1m -T -- true
"$bin" diff d1m | grep -qx 'no changes'

small=$scratch/ws10
mkdir -p "$small"
for i in $(seq 1 10); do echo "$i" >"$small/f$i"; done
"$bin" init d10 --workspace "$small" >/dev/null
"$bin" run d10 -T -- true

hyperfine -N --warmup 3 --runs "$runs" --export-json "$out/diff.json" \
	-n "airlock diff, 10,000 changes" "$bin diff d10k" \
	-n "airlock diff, 10,000 changes, no disk wall" "$bin diff d10knd" \
	-n "git status, same 10,000 changes" "git -C $scratch/git10k status --porcelain" \
	-n "airlock diff, 1M files, none changed" "$bin diff d1m" \
	-n "airlock diff, 10 files, none changed" "$bin diff d10" >/dev/null
stats "$out/diff.json"
d10k=$(median "$out/diff.json" "airlock diff, 10,000 changes")
git10k=$(median "$out/diff.json" "git status, same 10,000 changes")
d1m=$(median "$out/diff.json" "airlock diff, 1M files, none changed")
figure "diff, 10,000 changes, median ms" "$d10k" "git status $git10k" "<= 100" "$(verdict "$d10k" '<=' 100)"
figure "diff, 10,000 changes, no disk wall (resources.disk 0), median ms" "$(median "$out/diff.json" "airlock diff, 10,000 changes, no disk wall")" "git status $git10k" "<= 100" "$(verdict "$(median "$out/diff.json" "airlock diff, 10,000 changes, no disk wall")" '<=' 100)"
figure "diff, none in 1,000,000 files, median ms" "$d1m" "-" "<= 10" "$(verdict "$d1m" '<=' 10)"
figure "diff, none in 10 files (fixed cost), median ms" "$(median "$out/diff.json" "airlock diff, 10 files, none changed")" "-" "(context)" "-"
