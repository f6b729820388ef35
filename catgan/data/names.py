"""Portable file names: fetch writes only UTF-8 names, which DVC can hash and cache.

A name that is not valid UTF-8 (a Latin-1 ``caf\\xe9.jpg`` from another system, a zip entry in
cp437) would be copied as is, and then ``dvc repro`` fails hashing the output. Such a name is
replaced by an ASCII one that keeps its readable part and its extension, plus a hash of the
original bytes, so the same name always gets the same replacement.
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
