#!/usr/bin/env python3
"""mktree.py DIR N: N empty files, 1,000 per directory (dDDDD/fFFFF),
the same layout as internal/layer/diff_bench_test.go's cached tree, then
a .complete marker so later runs reuse the tree."""
import os
import sys

root, n = sys.argv[1], int(sys.argv[2])
if os.path.exists(os.path.join(root, ".complete")):
    sys.exit(0)
for d in range((n + 999) // 1000):
    sub = os.path.join(root, "d%04d" % d)
    os.makedirs(sub, exist_ok=True)
    fd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for f in range(min(1000, n - d * 1000)):
            try:
                os.mknod("f%04d" % f, 0o100644, dir_fd=fd)
            except FileExistsError:
                pass
    finally:
        os.close(fd)
open(os.path.join(root, ".complete"), "w").close()
