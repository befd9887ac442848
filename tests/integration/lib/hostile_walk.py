#!/usr/bin/env python3
"""Walk a mount of a hostile image and report how every access ended.

    hostile_walk.py MOUNT SOURCE

Visits every entry reachable from MOUNT (depth-bounded: a directory loop must
not keep us walking), doing what a container would: lstat, listdir, readlink,
listxattr/getxattr, and a full read of regular files. Every failing call is
recorded with its errno; every file that reads without error is compared with
SOURCE's file of the same path (where there is one): different bytes are
"wrong", the one thing a hostile image must never produce.

Prints JSON: {"entries": N, "errors": [[path, call, errno name]...],
"wrong": [path...]}.
"""

import errno
import json
import os
import stat
import sys

MAX_DEPTH = 12
mount, source = sys.argv[1], sys.argv[2]
out = {"entries": 0, "errors": [], "wrong": []}


def err(rel, call, e):
    out["errors"].append([rel, call, errno.errorcode.get(e.errno, str(e.errno))])


def visit(rel, depth):
    path = os.path.join(mount, rel)
    try:
        st = os.lstat(path)
    except OSError as e:
        return err(rel, "lstat", e)
    out["entries"] += 1
    try:
        for name in os.listxattr(path, follow_symlinks=False):
            os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        err(rel, "xattr", e)
    if stat.S_ISLNK(st.st_mode):
        try:
            os.readlink(path)
        except OSError as e:
            err(rel, "readlink", e)
    elif stat.S_ISREG(st.st_mode):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            return err(rel, "read", e)
        ref = os.path.join(source, rel)
        if os.path.isfile(ref) and not os.path.islink(ref):
            with open(ref, "rb") as f:
                if f.read() != data:
                    out["wrong"].append(rel)
    elif stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            return err(rel, "listdir", e)
        for n in names:
            visit(os.path.join(rel, n) if rel else n, depth + 1)


visit("", 0)
print(json.dumps(out))
