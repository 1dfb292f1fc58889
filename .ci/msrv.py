#!/usr/bin/env python3
"""Checks that the workspace's `rust-version` holds for its dependencies: no package in
Cargo.lock's graph may need a newer Rust. (Clippy's `incompatible_msrv` lint, on by default,
checks the standard library APIs the code uses against the same `rust-version`.)"""
import json
import subprocess
import sys

meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--locked"]))
ours = {p["id"] for p in meta["packages"] if p["id"] in meta["workspace_members"]}
msrv = next(p["rust_version"] for p in meta["packages"] if p["id"] in ours)


def version(v):
    """`1.88` and `1.88.0` are the same version."""
    parts = [int(x) for x in (v or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


too_new = [
    f'{p["name"]} {p["version"]} needs Rust {p["rust_version"]}'
    for p in meta["packages"]
    if version(p.get("rust_version")) > version(msrv)
]
if too_new:
    sys.exit(f"rust-version = {msrv} is not true:\n  " + "\n  ".join(too_new))
print(f"rust-version {msrv}: every dependency builds with it")
