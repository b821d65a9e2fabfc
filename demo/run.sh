#!/bin/sh
# Quick-start demo: copy a small project to a scratch workspace, let a demo
# agent loose on it inside a pod (built-in defaults), then show the diff.
# The host copy stays untouched until `airlock commit`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$here/.." && pwd)/bin/airlock
ws=${AIRLOCK_DEMO_WORKSPACE:-/tmp/airlock-demo}
export AIRLOCK_HOME=${AIRLOCK_HOME:-/tmp/airlock-demo-home}

"$bin" destroy --force demo >/dev/null 2>&1 || true
rm -rf "$ws" && mkdir -p "$ws" && cp -a "$here/workspace/." "$ws/"
mkdir -p "$HOME/demo-important" && echo keep > "$HOME/demo-important/data.txt"

echo "== airlock run demo -- sh -s < demo/agent.sh   (workspace $ws)"
"$bin" run demo --workspace "$ws" -- sh -s < "$here/agent.sh"
echo
echo "== airlock diff demo"
"$bin" diff demo
echo
echo "== the host is untouched:"
printf '   %s/src/greet.sh: ' "$ws"; tail -n 1 "$ws/src/greet.sh"
printf '   ~/demo-important/data.txt: '; cat "$HOME/demo-important/data.txt"
echo
echo "next (with AIRLOCK_HOME=$AIRLOCK_HOME):"
echo "   $bin diff demo -p          # the unified diffs"
echo "   $bin commit demo src/      # apply src/ to the host, journaled"
echo "   $bin undo demo             # put the host back"
echo "   $bin rollback demo         # discard the rest"
