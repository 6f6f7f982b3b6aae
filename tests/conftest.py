"""Fixtures shared by more than one suite: a running service in both deployment modes, for
the client tests and the CLI verb tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from noisefa.testing.deployments import DEPLOYMENT_MODES, Service, running_service


@pytest.fixture(scope="module", params=DEPLOYMENT_MODES)
def service(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Service]:
    """noisefa running in one deployment mode; tests using it run on both."""
    with running_service(request.param, tmp_path_factory.mktemp(request.param)) as running:
        yield running
