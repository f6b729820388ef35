"""A locked MLflow SQLite store is waited for and retried, never a failure.

Two queued experiments on one store through the real `dvc queue start -j 2` are tested in
tests/test_dvc_pipeline.py, next to the other DVC experiment tests.
"""
from __future__ import annotations

import sqlite3

import pytest

from catgan.tracking.store import Retrying


def test_a_call_refused_with_database_is_locked_is_retried_until_it_goes_through(tmp_path):
    """SQLite answers "database is locked" at once to a writer that would deadlock; Retrying waits."""
    db = tmp_path / "store.db"
    with sqlite3.connect(db) as setup:
        setup.execute("create table t (x)")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("begin exclusive")
    refusals = []

    class Store:
        def insert(self, value: int) -> str:
            try:
                with sqlite3.connect(db, timeout=0) as conn:
                    conn.execute("insert into t values (?)", (value,))
            except sqlite3.OperationalError as err:
                refusals.append(str(err))
                if len(refusals) == 2:  # the other writer commits after two refusals
                    other.execute("commit")
                raise
            return "stored"

    assert Retrying(Store()).insert(7) == "stored"
    assert refusals == ["database is locked"] * 2
    with sqlite3.connect(db) as check:
        assert check.execute("select x from t").fetchall() == [(7,)]


def test_other_errors_are_not_retried(tmp_path):
    calls = []

    class Store:
        def insert(self) -> None:
            calls.append(1)
            raise sqlite3.OperationalError("attempt to write a readonly database")

    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        Retrying(Store()).insert()
    assert len(calls) == 1
