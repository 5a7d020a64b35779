"""Job names are the contract between the web process and the workers."""

from __future__ import annotations

import importlib

import pytest

from bridge import jobs


@pytest.mark.parametrize("name", jobs.JOB_NAMES)
def test_every_job_name_imports_to_a_callable(name: str) -> None:
    module, _, attr = name.rpartition(".")
    assert callable(getattr(importlib.import_module(module), attr))


def test_job_ids_are_rq_safe() -> None:
    assert jobs.job_id("send", "12", "1712-0") == "send-12-1712-0"
    assert jobs.job_id("a:b", "+33 6") == "a_b-_33_6"
