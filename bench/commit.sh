#!/usr/bin/env bash
# `airlock commit` of 1 GiB in 10,000 files against `cp -a` of the same
# files on the same file system, in one run. Each round: a fresh pod on an
# empty workspace writes the files inside the pod (they land in its
# layer), everything is synced, then `cp -a` copies the layer's files to
# a fresh directory (plain, and followed by sync, since commit ends with
# a syncfs), then `airlock commit` applies them to the workspace. Both
# read the same warm files from the same place (the pod's upper directory,
# in the mounted layer image with the disk wall).
# Nothing is deleted until the end: on an ext4 without a journal (this
# machine's root) every create skips the inodes freed in the last minute,
# one by one, and freed memory goes back to the VM's host; a measurement
# right after removing the previous one's 10,000 files paid for both.
# ROUNDS (default 3); COMMIT_MB (default 1024).
source "$(dirname "$0")/lib.sh"
rounds=${ROUNDS:-3}
mb=${COMMIT_MB:-1024}
files=$((10000 * mb / 1024))
cat >"$scratch/fill.py" <<PY
import os, sys
root, files, size = sys.argv[1], $files, ($mb << 20) // $files
buf = bytearray((i * 7 + (i >> 9)) & 0xff for i in range(size))
for i in range(files):
    d = os.path.join(root, "d%02d" % (i % 16))
    os.makedirs(d, exist_ok=True)
    buf[0] = i & 0xff
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(buf)
PY
ours=() cpa=() cpas=() nd=() ndcpa=()
printf 'version: 1\nresources:\n  disk:\n    bytes: 0\n    inodes: 0\n' >"$scratch/nodisk.yaml"
for r in $(seq 1 "$rounds"); do
	ws=$scratch/ws$r
	mkdir -p "$ws"
	cp "$scratch/fill.py" "$ws/.fill.py"
	"$bin" init "c$r" --workspace "$ws" >/dev/null
	"$bin" run "c$r" -T -- python3 "$ws/.fill.py" "$ws"
	# The layer is the pod's image, mounted on pods/<name>/layer from first
	# use to destroy: cp -a and commit copy the same files from the same
	# place in the same state.
	upper=$(dirname "$(find "$AIRLOCK_HOME/pods/c$r" -type d -name d00 -path '*upper*' | head -1)")
	[ -f "$upper/d00/f00000" ] || { echo "bench: no layer files under $upper" >&2; exit 1; }
	sync
	s=$(date +%s%N); cp -a "$upper/." "$scratch/cp$r"; e=$(date +%s%N)
	cpa+=("$(ms "$s" "$e")")
	sync
	s=$(date +%s%N); cp -a "$upper/." "$scratch/cps$r"; sync; e=$(date +%s%N)
	cpas+=("$(ms "$s" "$e")")
	s=$(date +%s%N); "$bin" commit "c$r" >/dev/null; e=$(date +%s%N)
	ours+=("$(ms "$s" "$e")")
	n=$(find "$ws" -type f -name 'f*' | wc -l)
	[ "$n" = "$files" ] || { echo "bench: commit left $n of $files files in the workspace" >&2; exit 1; }
	"$bin" destroy --force "c$r" >/dev/null

	# The same without the disk wall (resources.disk 0): the layer is a
	# directory on the workspace's file system, so commit can link.
	ws=$scratch/nws$r
	mkdir -p "$ws"
	cp "$scratch/fill.py" "$ws/.fill.py"
	"$bin" init "n$r" --workspace "$ws" --config "$scratch/nodisk.yaml" >/dev/null
	"$bin" run "n$r" -T -- python3 "$ws/.fill.py" "$ws"
	upper=$(dirname "$(find "$AIRLOCK_HOME/pods/n$r" -type d -name d00 -path '*upper*' | head -1)")
	sync
	s=$(date +%s%N); cp -a "$upper/." "$scratch/ndcp$r"; e=$(date +%s%N)
	ndcpa+=("$(ms "$s" "$e")")
	sync
	s=$(date +%s%N); "$bin" commit "n$r" >/dev/null; e=$(date +%s%N)
	nd+=("$(ms "$s" "$e")")
	"$bin" destroy --force "n$r" >/dev/null
done
echo "no disk wall: airlock commit (ms): ${nd[*]}; cp -a of its layer (ms): ${ndcpa[*]}"
echo "airlock commit (ms): ${ours[*]}"
echo "cp -a (ms):          ${cpa[*]}"
echo "cp -a + sync (ms):   ${cpas[*]}"
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(med "${ours[@]}") mc=$(med "${cpa[@]}") mcs=$(med "${cpas[@]}")
mibs() { python3 -c "print('%.0f' % ($mb / ($1 / 1000)))"; }
ratio=$(python3 -c "print('%.2f' % ($mc / $mo))")
figure "commit $mb MiB in $files files, MiB/s (median ms)" "$(mibs "$mo") ($mo)" "cp -a $(mibs "$mc") ($mc); +sync $(mibs "$mcs") ($mcs)" ">= 0.8 x cp -a" "$(verdict "$ratio" '>=' 0.8) (${ratio}x)"
mnd=$(med "${nd[@]}") mndc=$(med "${ndcpa[@]}")
figure "commit $mb MiB, no disk wall (layer on the same file system), MiB/s (median ms)" "$(mibs "$mnd") ($mnd)" "cp -a $(mibs "$mndc") ($mndc)" ">= 0.8 x cp -a" "$(verdict "$(python3 -c "print($mndc / $mnd)")" '>=' 0.8) ($(python3 -c "print('%.2f' % ($mndc / $mnd))")x)"
