"""The interface the training loop logs to (catgan/training/tracker.py): a missing method is an
error when a tracker is made, not a silent no-op later."""
from __future__ import annotations

import pytest

from catgan.tracking.client import MlflowTracker
from catgan.training.tracker import NullTracker, Tracker


def test_a_tracker_that_lacks_a_method_cannot_be_made():
    methods = {name: lambda self, *args, **kwargs: None
               for name in Tracker.__abstractmethods__ if name != "log_dataset"}
    partial = type("Partial", (Tracker,), methods)
    with pytest.raises(TypeError, match="log_dataset"):
        partial()


def test_mlflow_and_the_no_op_each_implement_every_method_and_inherit_none():
    assert {"start", "log_metrics", "log_rows", "finish"} <= Tracker.__abstractmethods__
    for tracker in (MlflowTracker, NullTracker):
        assert Tracker in tracker.__mro__ and not tracker.__abstractmethods__
        assert all(name in vars(tracker) for name in Tracker.__abstractmethods__), tracker
    assert NullTracker not in MlflowTracker.__mro__
    null = NullTracker()
    assert null.start({}, {}) is None and null.run_id is None and null.finish() is None
