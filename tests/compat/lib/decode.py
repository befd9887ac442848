#!/usr/bin/env python3
"""decode.py GO_TYPE: decode stdin's JSON strictly as the Go struct GO_TYPE of
snapshotter_types.py (what nydus-snapshotter / nydusctl decode it into); echo it
on success, exit 1 with the Go-style error otherwise."""
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
import go_structs  # noqa: E402
import snapshotter_types  # noqa: E402

text = sys.stdin.read()
try:
    go_structs.decode_text(text, getattr(snapshotter_types, sys.argv[1]), sys.argv[1])
except go_structs.DecodeError as e:
    print(f"decode {sys.argv[1]}: {e}", file=sys.stderr)
    sys.exit(1)
sys.stdout.write(text)
