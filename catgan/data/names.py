"""Portable file names: fetch writes only UTF-8 names, since ``dvc repro`` fails to hash others.

A name that is not UTF-8 (Latin-1 ``caf\\xe9.jpg``, a cp437 zip entry) becomes an ASCII one: its
readable part and extension plus a hash of its bytes, so the same name always maps the same way.
"""
from __future__ import annotations

import hashlib
import os
import re

_EXTENSION = re.compile(rb"\.[A-Za-z0-9]{1,10}")
_UNREADABLE = re.compile(rb"[^A-Za-z0-9._-]+")


def portable(raw: bytes) -> str:
    """The name ``raw`` (one path part) decoded if it is UTF-8, else its deterministic stand-in."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    stem, ext = os.path.splitext(raw)
    if not _EXTENSION.fullmatch(ext):
        stem, ext = raw, b""
    readable = _UNREADABLE.sub(b"_", stem).decode("ascii")
    return f"{readable}-{hashlib.sha256(raw).hexdigest()[:10]}{ext.decode('ascii')}"


def escaped(raw: bytes) -> str:
    """``raw`` as text for a manifest: bytes that are not UTF-8 become \\xNN."""
    return raw.decode("utf-8", "backslashreplace")
