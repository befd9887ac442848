#!/usr/bin/env python3
"""Compare two tar streams entry by entry (the oracle for `nydus-image unpack`).

  converter_tars.py same A.tar B.tar   exit 0 when both hold the same entries:
      name (without "./" and trailing "/"), type, mode, uid, gid, size, content
      sha256, link target, mtime (seconds); the root "." entry is ignored.
Only Python's tarfile reads them, so nothing of nydus-cpp is involved.
"""

import hashlib
import sys
import tarfile


def entries(path):
    out = {}
    with tarfile.open(path) as t:
        for m in t:
            name = m.name
            while name.startswith("./"):
                name = name[2:]
            name = name.rstrip("/")
            if name in ("", "."):
                continue
            data = t.extractfile(m).read() if m.isreg() else b""
            link = m.linkname if (m.issym() or m.islnk()) else ""
            while link.startswith("./") and m.islnk():
                link = link[2:]
            kind = "hardlink" if m.islnk() else m.type
            out[name] = (kind, m.mode & 0o7777, m.uid, m.gid, len(data) if m.isreg() else 0,
                         hashlib.sha256(data).hexdigest() if m.isreg() else "", link, int(m.mtime))
    return out


def main():
    if sys.argv[1] != "same":
        sys.exit("unknown command")
    a, b = entries(sys.argv[2]), entries(sys.argv[3])
    bad = 0
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            # A hardlink may be stored either way round; compare the data then.
            print("differs: %s\n  %s\n  %s" % (name, a.get(name), b.get(name)))
            bad += 1
    print("%d entries, %d differ" % (len(a), bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
