"""Strict decoders mirroring the Go structs real clients decode our JSON into.

Go's encoding/json fails on a wrong JSON type ("cannot unmarshal array into Go value
of type types.CacheMetrics") and silently zeroes a missing field. A silently zeroed
field is how clients break without an error (a zero `git_commit`, an empty
`underlying_files`), so these decoders are stricter than Go: every field the upstream
server always writes must be present, with the JSON type its Go field takes. Extra
keys are allowed (Go ignores them; our extras stay).

Schemas are plain Python values:
  "string" "bool" "int" "uint" "float" "any"   a Go scalar (int64/uint64/float64/interface{})
  [T]                                           a Go slice of T (null is an error unless Opt)
  Map(T)                                        map[string]T
  Struct("go.Name", {"json_key": T, ...})       a Go struct; wrap a field type in Opt(...)
                                                for `omitempty`/pointer fields upstream may omit
Usage: decode(json_value, schema) raises DecodeError naming the path and the Go type.
"""

import json


class DecodeError(Exception):
    pass


class Opt:
    def __init__(self, t):
        self.t = t


class Map:
    def __init__(self, t):
        self.t = t


class Struct:
    def __init__(self, name, fields):
        self.name = name
        self.fields = fields


def _kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def decode(v, t, path="$"):
    """Check v against schema t; return v."""
    if isinstance(t, Opt):
        if v is None:
            return v
        t = t.t
    if t == "any":
        return v
    if t == "string":
        if not isinstance(v, str):
            raise DecodeError(f"{path}: cannot unmarshal {_kind(v)} into Go value of type string")
    elif t == "bool":
        if not isinstance(v, bool):
            raise DecodeError(f"{path}: cannot unmarshal {_kind(v)} into Go value of type bool")
    elif t in ("int", "uint"):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
            raise DecodeError(f"{path}: cannot unmarshal {_kind(v)} {v!r} into Go value of type {t}64")
        if t == "uint" and v < 0:
            raise DecodeError(f"{path}: cannot unmarshal number {v} into Go value of type uint64")
        if not (-(2**63) <= v < 2**64):
            raise DecodeError(f"{path}: number {v} overflows {t}64")
    elif t == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DecodeError(f"{path}: cannot unmarshal {_kind(v)} into Go value of type float64")
    elif isinstance(t, list):
        if not isinstance(v, list):
            raise DecodeError(f"{path}: cannot unmarshal {_kind(v)} into Go value of type []...")
        for i, e in enumerate(v):
            decode(e, t[0], f"{path}[{i}]")
    elif isinstance(t, Map):
        if not isinstance(v, dict):
            raise DecodeError(f"{path}: cannot unmarshal {_kind(v)} into Go value of type map[string]...")
        for k, e in v.items():
            decode(e, t.t, f"{path}.{k}")
    elif isinstance(t, Struct):
        if not isinstance(v, dict):
            raise DecodeError(f"{path}: cannot unmarshal {_kind(v)} into Go value of type {t.name}")
        for key, ft in t.fields.items():
            if key not in v:
                if isinstance(ft, Opt):
                    continue
                raise DecodeError(f"{path}: {t.name} field {key!r} missing (Go would zero it)")
            decode(v[key], ft, f"{path}.{key}")
    else:
        raise ValueError(f"bad schema {t!r}")
    return v


def decode_text(text, t, what="body"):
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise DecodeError(f"{what}: not JSON: {e}: {text[:200]!r}")
    return decode(v, t)
