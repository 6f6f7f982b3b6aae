"""Types of the query and header parameters routes declare, bounded to what the database
can hold and compare, so an out-of-range value is a 422 naming the parameter, never a
database error or an overflow deep in a query."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

INTEGER_MAX = 2**31 - 1
"""The largest value of an SQL ``INTEGER`` column (epochs)."""

BIGINT_MAX = 2**63 - 1
"""The largest value of an SQL ``BIGINT`` column (event ids)."""


def _convertible_to_utc(value: datetime) -> datetime:
    # Stored times are UTC; an offset near the ends of the calendar leaves it on conversion.
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError as error:
        raise ValueError(
            f"{value.isoformat()} is outside 0001-01-01..9999-12-31 once converted to UTC"
        ) from error


UtcConvertibleDatetime = Annotated[datetime, AfterValidator(_convertible_to_utc)]
"""A datetime the repositories can convert to UTC (naive ones are taken as UTC there)."""
