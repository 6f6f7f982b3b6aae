"""A worker write that loses its database connection is retried, within a deadline."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from noisefa.worker.db_retry import retry_db_write


def failing(times: int, error: Exception):
    calls = []

    def write() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "written"

    return write, calls


def lost_connection() -> OperationalError:
    return OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))


def test_a_write_that_loses_its_connection_is_retried_until_it_lands():
    write, calls = failing(2, lost_connection())
    assert retry_db_write(write, deadline_s=30, what="test") == "written"
    assert len(calls) == 3


def test_an_outage_longer_than_the_deadline_raises():
    write, calls = failing(10_000, lost_connection())
    with pytest.raises(OperationalError):
        retry_db_write(write, deadline_s=0.5, what="test")
    assert 1 < len(calls) < 10


def test_other_database_errors_are_not_retried():
    write, calls = failing(1, IntegrityError("INSERT", {}, Exception("duplicate")))
    with pytest.raises(IntegrityError):
        retry_db_write(write, deadline_s=30, what="test")
    assert len(calls) == 1
