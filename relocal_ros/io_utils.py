"""File helpers shared by the map, the networks' caches and the trainers: one checksum, one atomic write."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (the map's checksums, checkpoint checksums, cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write data to path so that readers see either the old file or the whole new one: a temporary file in the same
    directory (".NAME.PID.THREAD.tmp"), flushed and fsynced, then os.replace. Returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
