"""Fixtures shared by more than one suite: a running service in both deployment modes, for
the client tests and the CLI verb tests; one torch thread for a test that compares with a
worker's numbers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from noisefa.testing.deployments import DEPLOYMENT_MODES, Service, running_service


@pytest.fixture(scope="module", params=DEPLOYMENT_MODES)
def service(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Service]:
    """noisefa running in one deployment mode; tests using it run on both."""
    with running_service(request.param, tmp_path_factory.mktemp(request.param)) as running:
        yield running


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """This process trains with one torch thread during the test, as a test stack's workers
    do (``NOISEFA_TORCH_THREADS=1``): the same float sums, so the same metrics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
