#!/usr/bin/env bash
# Start-up figures, side by side with bubblewrap, in one run:
#   - warm `airlock run POD -- true` (default walls, and with network: none),
#     and into a started pod (airlock start: the walls stay up between
#     runs, each run is a command forked inside them), against bwrap building the nearest equivalent walls, and against the
#     floor of Airlock's process shape (bench/floor: a Go supervisor and a
#     Go init in the same namespaces, no walls);
#   - a fresh create + run + destroy;
#   - 50 pods created.
# RUNS (default 300) sets the warm runs per command.
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-300}
ws=$scratch/ws
mkdir -p "$ws" "$scratch/bin"
echo hello >"$ws/file"
go build -o "$scratch/bin/seccompbpf" ./bench/seccompbpf
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$scratch/bin/floor" ./bench/floor
"$scratch/bin/seccompbpf" >"$scratch/seccomp.bpf"
printf 'version: 1\nnetwork:\n  mode: none\n' >"$scratch/none.yaml"
printf 'version: 1\nresources:\n  disk:\n    bytes: 0\n    inodes: 0\n' >"$scratch/nodisk.yaml"

"$bin" init warm --workspace "$ws" >/dev/null
"$bin" init warmnone --workspace "$ws" --config "$scratch/none.yaml" >/dev/null
"$bin" init warmnd --workspace "$ws" --config "$scratch/nodisk.yaml" >/dev/null
"$bin" run warm -T -- true
"$bin" run warmnone -T -- true
"$bin" run warmnd -T -- true
"$bin" init warmst --workspace "$ws" >/dev/null
"$bin" start warmst >/dev/null
"$bin" run warmst -T -- true

# bubblewrap building the nearest equivalent of the pod's walls: new
# mount, PID, IPC, UTS and network namespaces, a new session, no
# capabilities, the system directories read-only, the workspace and the
# home directory (plain read-write binds: bwrap 0.8 has no overlay, so it
# pays less here and protects nothing), the same hidden paths, a fresh
# /proc, a minimal /dev, private /tmp and /run, and Airlock's own
# compiled seccomp program. It has no Landlock, cgroups, network wall,
# audit trail or run state to write.
bw=(bwrap --unshare-pid --unshare-ipc --unshare-uts --unshare-net --die-with-parent --new-session
	--cap-drop ALL --hostname warm --ro-bind /usr /usr --ro-bind /etc /etc)
for d in /bin /sbin /lib /lib32 /lib64 /libx32; do
	if [ -L "$d" ]; then bw+=(--symlink "$(readlink "$d")" "$d"); elif [ -d "$d" ]; then bw+=(--ro-bind "$d" "$d"); fi
done
[ -d /opt ] && bw+=(--ro-bind /opt /opt)
bw+=(--bind "$HOME" "$HOME" --bind "$ws" "$ws")
for h in .ssh .aws .gnupg .config/gcloud .docker .kube .netrc .git-credentials .password-store; do
	if [ -d "$HOME/$h" ]; then bw+=(--tmpfs "$HOME/$h"); elif [ -e "$HOME/$h" ]; then bw+=(--ro-bind /dev/null "$HOME/$h"); fi
done
bw+=(--tmpfs "$AIRLOCK_HOME" --proc /proc --dev /dev --tmpfs /tmp --tmpfs /run --chdir "$ws")
bwseccomp="--seccomp 9 9<$scratch/seccomp.bpf"
"${bw[@]}" true
bash -c "${bw[*]} $bwseccomp true"

echo "== warm run -- true ($runs runs each)"
hyperfine -N --warmup 20 --runs "$runs" --export-json "$out/run-true.json" \
	-n "airlock run (default walls)" "$bin run warm -T -- true" \
	-n "airlock run (network: none)" "$bin run warmnone -T -- true" \
	-n "airlock run (no disk wall)" "$bin run warmnd -T -- true" \
	-n "airlock run into a started pod (default walls)" "$bin run warmst -T -- true" \
	-n "bwrap (nearest walls, no seccomp)" "${bw[*]} true" \
	-n "floor: Go supervisor + Go init in new namespaces, no walls" "$scratch/bin/floor true" >/dev/null
# bwrap reads the seccomp program from an fd, so this one goes through a
# shell; hyperfine subtracts the shell's start (the "true" row checks it).
hyperfine --shell=bash --warmup 20 --runs "$runs" --export-json "$out/run-true-bwrap-seccomp.json" \
	-n "bwrap (nearest walls + seccomp)" "${bw[*]} $bwseccomp true" \
	-n "bash -c true" "true" >/dev/null
stats "$out/run-true.json"
stats "$out/run-true-bwrap-seccomp.json"
ours=$(median "$out/run-true.json" "airlock run (default walls)")
bwsc=$(python3 -c "print('%.2f' % ($(median "$out/run-true-bwrap-seccomp.json" "bwrap (nearest walls + seccomp)") - $(median "$out/run-true-bwrap-seccomp.json" "bash -c true")))")
figure "warm run -- true, median ms" "$ours" "bwrap $bwsc" "<= 10" "$(verdict "$ours" '<=' 10)"
figure "warm run -- true, x bwrap" "$(python3 -c "print('%.2f' % ($ours / $bwsc))")" "1.00" "<= 1.5" "$(verdict "$(python3 -c "print($ours / $bwsc)")" '<=' 1.5)"
started=$(median "$out/run-true.json" "airlock run into a started pod (default walls)")
figure "warm run -- true into a started pod, median ms" "$started" "bwrap $bwsc" "<= 10" "$(verdict "$started" '<=' 10)"
figure "warm run -- true into a started pod, x bwrap" "$(python3 -c "print('%.2f' % ($started / $bwsc))")" "1.00" "<= 1.5" "$(verdict "$(python3 -c "print($started / $bwsc)")" '<=' 1.5)"
"$bin" stop warmst >/dev/null
figure "floor (two Go processes, namespaces, exec; no walls), median ms" "$(median "$out/run-true.json" "floor: Go supervisor + Go init in new namespaces, no walls")" "bwrap $bwsc" "(context)" "-"
none=$(median "$out/run-true.json" "airlock run (network: none)")
figure "warm run -- true (network: none), median ms" "$none" "bwrap $bwsc" "(context)" "-"
figure "warm run -- true (no disk wall), median ms" "$(median "$out/run-true.json" "airlock run (no disk wall)")" "bwrap $bwsc" "(context)" "-"

echo "== fresh create + run + destroy"
cat >"$scratch/crd.sh" <<SH
#!/bin/sh
set -e
"$bin" init crd --workspace "$ws" >/dev/null
"$bin" run crd -T -- true
"$bin" destroy crd >/dev/null
SH
cat >"$scratch/bwcrd.sh" <<SH
#!/bin/sh
set -e
mkdir -p "$scratch/bwpod/upper" "$scratch/bwpod/work"
${bw[*]} true
rm -rf "$scratch/bwpod"
SH
chmod +x "$scratch/crd.sh" "$scratch/bwcrd.sh"
hyperfine -N --warmup 3 --runs "${CRD_RUNS:-50}" --export-json "$out/create-run-destroy.json" \
	-n "airlock init + run + destroy" "$scratch/crd.sh" \
	-n "bwrap: mkdir + run + rm" "$scratch/bwcrd.sh" \
	-n "sh startup (subtract)" "/bin/sh -c true" >/dev/null
stats "$out/create-run-destroy.json"
sh0=$(median "$out/create-run-destroy.json" "sh startup (subtract)")
crd=$(python3 -c "print('%.2f' % ($(median "$out/create-run-destroy.json" "airlock init + run + destroy") - $sh0))")
bwcrd=$(python3 -c "print('%.2f' % ($(median "$out/create-run-destroy.json" "bwrap: mkdir + run + rm") - $sh0))")
figure "create + run + destroy, median ms" "$crd" "bwrap $bwcrd" "<= 50" "$(verdict "$crd" '<=' 50)"

echo "== 50 pods created (5 rounds)"
rounds=()
for r in 1 2 3 4 5; do
	s=$(date +%s%N)
	for i in $(seq 1 50); do "$bin" init "p$i" --workspace "$ws" >/dev/null; done
	e=$(date +%s%N)
	rounds+=("$(ms "$s" "$e")")
	for i in $(seq 1 50); do "$bin" destroy "p$i" >/dev/null; done
done
echo "rounds (ms): ${rounds[*]}"
fifty=$(printf '%s\n' "${rounds[@]}" | sort -n | sed -n 3p)
figure "50 pods created, median of 5 rounds, ms" "$fifty" "-" "<= 500" "$(verdict "$fifty" '<=' 500)"
