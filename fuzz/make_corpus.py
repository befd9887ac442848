#!/usr/bin/env python3
"""Regenerate the seed corpora in fuzz/corpus/<target>/ from images built by the
project (nydus-image create over a tiny tree; see make_corpus.sh) plus the
upstream fixtures. Usage: make_corpus.py IMAGES_DIR FIXTURES_DIR"""
import json, os, struct, sys, zlib

out_root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
images, fixtures = sys.argv[1], sys.argv[2]
MAGIC = struct.pack("<I", 0xB10BB10B)


def put(target, name, data):
    d = os.path.join(out_root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rd(p):
    with open(p, "rb") as f:
        return f.read()


# bootstrap: our own images (plain, lz4+ToC, sha256+prefetch) and upstream's.
for n in ("b1", "b5", "b10"):
    put("bootstrap", n + ".boot", rd(os.path.join(images, n + ".boot")))
put("bootstrap", "upstream-rafs-v6-2.2.boot", rd(os.path.join(fixtures, "v6/rafs-v6-2.2.boot")))
# bootstrap_v5: upstream's two RAFS v5 images (sha256/none and blake3/lz4_block).
for n in ["sha256-nocompress-repeatable", "blake3-lz4_block-non_repeatable"]:
    put("bootstrap_v5", n, rd(os.path.join(fixtures, "v5", n)))
# Bootstrap::from_bytes reads v5 too: the v6 target gets one v5 seed.
put("bootstrap", "upstream-rafs-v5-sha256.boot", rd(os.path.join(fixtures, "v5/sha256-nocompress-repeatable")))

blobs = ["blob1", "blob5", "blob9", "blob10"]  # none; lz4+ToC; zstd+ToC+inlined bootstrap; sha256
blobs.append(os.path.join(fixtures, "v6/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"))
seen_meta = set()
seen_hdr = {}
for b in blobs:
    data = rd(b if os.path.isabs(b) else os.path.join(images, b))
    name = os.path.basename(b)[:16]
    # blob_meta: [48-byte BlobInfo prefix, mode=1: take ci fields from the header] + ci + header.
    i = data.find(MAGIC)
    while i >= 0:
        h = data[i:i + 4096]
        if len(h) == 4096 and h[-4:] == MAGIC:
            feats, ccomp, entries, ci_off, ci_csz, ci_usz = struct.unpack_from("<IIIQQQ", h, 4)
            if ci_off + ci_csz == i:
                comp = 3 if b"\x28\xb5\x2f\xfd" in data[:ci_off] else 0
                prefix = struct.pack("<BBBBIIIQQQII", 1, comp, ccomp, 0, entries, feats, 0x1000,
                                     len(data), 1 << 20, ci_off, ci_usz, ci_csz)
                key = (feats, ccomp, ci_csz)
                if key not in seen_meta:
                    seen_meta.add(key)
                    put("blob_meta", name + ".meta", prefix + data[ci_off:i + 4096])
                break
        i = data.find(MAGIC, i + 1)
    # toc: the ToC entries + "rafs.blob.toc" tar header from the blob's end.
    if data[-512 + 0:-512 + 13] == b"rafs.blob.toc":
        size = int(data[-512 + 124:-512 + 136].rstrip(b"\0 ") or b"0", 8)
        put("toc", name + ".toc", data[-(size + 512):])
    # tar_header: every 512-byte header at the end of a section ("ustar" at offset 257).
    j = data.find(b"ustar")
    while j >= 0:
        hdr = data[j - 257:j - 257 + 512]
        if j >= 257 and len(hdr) == 512 and seen_hdr.get(hdr[:100], 0) < 2:
            seen_hdr[hdr[:100]] = seen_hdr.get(hdr[:100], 0) + 1
            put("tar_header", "%s-%d.hdr" % (name, j), hdr)
        j = data.find(b"ustar", j + 1)

# decompress: [compressor byte, 2-byte little-endian output size, unused byte] + stream.
import subprocess
plain = (b"hello nydus " * 200) + bytes(range(256))
zst = subprocess.run(["zstd", "-q", "-c", "--no-check", "-3"], input=plain, capture_output=True, check=True).stdout
put("decompress", "zstd", bytes([0]) + len(plain).to_bytes(3, "little") + zst)
put("decompress", "zstd-short", bytes([0]) + (len(plain) - 1).to_bytes(3, "little") + zst)
# An LZ4 block: literals only, then a match (token, literals, offset, extra length).
lz4 = bytes([0x5F]) + b"abcde" + struct.pack("<H", 5) + bytes([0x0F, 0x20]) + bytes([0x50]) + b"vwxyz"
put("decompress", "lz4", bytes([1]) + (5 + 4 + 15 + 0x20 + 5).to_bytes(3, "little") + lz4)
put("decompress", "none", bytes([2]) + (16).to_bytes(3, "little") + b"0123456789abcdef")
put("decompress", "gzip", bytes([3]) + len(plain).to_bytes(3, "little") + zlib.compress(plain))

# config_json: v1 and v2 shapes as upstream writes them.
put("config_json", "v1.json", b'''{"device":{"backend":{"type":"localfs","config":{"dir":"/blobs"}},
 "cache":{"type":"blobcache","config":{"work_dir":"/cache"}}},"mode":"direct","digest_validate":false,
 "iostats_files":true,"enable_xattr":true,"amplify_io":1048576,
 "fs_prefetch":{"enable":true,"threads_count":4,"merging_size":131072,"bandwidth_rate":0,"prefetch_all":true}}''')
put("config_json", "v2.json", b'''{"version":2,"id":"x","backend":{"type":"registry","registry":{"scheme":"https",
 "host":"r.example","repo":"lib/x","auth":"dXNlcjpwYXNz","timeout":5,"connect_timeout":5,"retry_limit":2,
 "mirrors":[{"host":"http://m","headers":{"a":"b"}}],"proxy":{"url":"http://p","fallback":true}}},
 "cache":{"type":"filecache","filecache":{"work_dir":"/c"}},"rafs":{"mode":"cached","validate":true,
 "enable_xattr":true,"iostats_files":false,"batch_size":0,"prefetch":{"enable":true,"threads":2,
 "batch_size":65536,"bandwidth_limit":1000,"prefetch_all":false}}}''')
put("config_json", "v2-s3.json", b'{"version":2,"backend":{"type":"s3","s3":{"endpoint":"h:9000","scheme":"http","bucket_name":"b","region":"r","object_prefix":"p/","access_key_id":"k","access_key_secret":"s"}},"cache":{"type":""}}')

# http_request: the API's requests (nydusctl and upstream's clients), one pipelined pair.
reqs = {
    "get-daemon": b"GET /api/v1/daemon HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "mount": b"POST /api/v1/mount?mountpoint=/sub%20dir HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\n"
             b"Content-Length: 62\r\n\r\n{\"source\":\"/b/image.boot\",\"fs_type\":\"rafs\",\"config\":\"{}\"}\r\n",
    "chunked": b"PUT /api/v1/daemon HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n",
    "expect": b"PUT /api/v1/mount?mountpoint=/x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
    "pipelined": b"GET /api/v1/metrics?id=/a&x=1+2 HTTP/1.1\r\n\r\nDELETE /api/v1/mount?mountpoint=/a HTTP/1.1\r\nConnection: close\r\n\r\n",
    "http10": b"GET /api/v2/blobs HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
}
for k, v in reqs.items():
    put("http_request", k, v)

# www_authenticate: challenges as registries send them.
for k, v in {
    "bearer": b'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    "basic": b'Basic realm="Registry Realm"',
    "multi": b'Basic realm="x", Bearer realm="https://a/t",service=s,scope="repository:a/b:pull,push"',
    "escaped": b'Bearer realm="https://a/t?x=\\"y\\"" , error="invalid_token"',
}.items():
    put("www_authenticate", k, v)

for k, v in {"range": b"bytes 0-1023/4096", "star": b"bytes 100-199/*", "retry": b"120",
             "spaces": b"bytes  18446744073709551614-18446744073709551614/18446744073709551615"}.items():
    put("content_range", k, v)

# fscache_message: kernel messages as the 6.12 kernel lays them out (first byte 0)
# and /api/v2/blobs bodies as nydus-snapshotter sends them (first byte 1).
def hdr(mid, op, ln, oid):
    return struct.pack("<IIII", mid, op, ln, oid)


def open_msg(mid, oid, vk, ck, fd):
    vk, ck = vk.encode() + b"\0", ck.encode()
    return hdr(mid, 0, 32 + len(vk) + len(ck), oid) + struct.pack("<IIII", len(vk), len(ck), fd, 0) + vk + ck


for k, v in {
    "open-boot": b"\0" + open_msg(0, 1, "erofs,boot", "boot", 5),
    "open-blob": b"\0" + open_msg(3, 2, "erofs,dom", "a" * 64, 7),
    "read": b"\0" + hdr(4, 2, 32, 2) + struct.pack("<QQ", 0x10000, 0x20000),
    "close": b"\0" + hdr(5, 1, 16, 2),
    "entry-v2": b'\1{"type":"bootstrap","id":"img","domain_id":"d","config_v2":{"version":2,"backend":{"type":"registry",'
                b'"registry":{"host":"h","repo":"r"}},"cache":{"type":"fscache","fscache":{"work_dir":"/w"},'
                b'"prefetch":{"enable":true}},"metadata_path":"/m"}}',
    "entry-legacy": b'\1{"type":"bootstrap","id":"img","config":{"backend_type":"localfs","backend_config":{"dir":"/b"},'
                    b'"cache_type":"fscache","cache_config":{"work_dir":"/w"},"metadata_path":"/m"}}',
}.items():
    put("fscache_message", k, v)

# oci_manifest: what the converter reads from registries and OCI layouts.
D = "sha256:" + "a" * 64
for k, v in {
    "manifest": {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D, "size": 10},
                 "layers": [{"mediaType": "application/vnd.oci.image.layer.nydus.blob.v1", "digest": D, "size": 5,
                             "annotations": {"containerd.io/snapshot/nydus-blob": "true"}}]},
    "index": {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
              "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D, "size": 7,
                             "platform": {"os": "linux", "architecture": "amd64",
                                          "os.features": ["nydus.remoteimage.v1"]}}]},
    "docker": {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
               "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D, "size": 1},
               "layers": []},
}.items():
    put("oci_manifest", k, json.dumps(v).encode())
for k, v in {"ref": "registry.local:5000/lib/app:v1", "ref-digest": "localhost/a/b@" + D,
             "ref-oci": "oci:/tmp/layout:tag"}.items():
    put("oci_manifest", k, v.encode())
