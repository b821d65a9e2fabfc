#!/bin/sh
# A demo "agent": does useful work, then misbehaves the way agents do.
echo "agent: editing the project"
printf '#!/bin/sh\necho "hello, reviewed world"\n' > src/greet.sh
printf 'def add(a, b):\n    return a + b\n' > src/calc.py
chmod +x src/greet.sh
rm -f NOTES.txt
echo "agent: trying things it should not"
n=$(ls -A ~/.ssh 2>/dev/null | wc -l)
if [ "$n" -gt 0 ]; then echo "  saw $n entries in ~/.ssh?!"; else echo "  ~/.ssh is hidden (empty, read-only)"; fi
if touch /usr/bin/agent-was-here 2>/dev/null; then echo "  wrote /usr/bin?!"; else echo "  /usr is read-only"; fi
rm -rf "$HOME/demo-important" 2>/dev/null && echo "  deleted ~/demo-important (only in the pod's layer)"
echo "agent: done"
