"""Fixtures shared by more than one suite: a running service in both deployment modes, for
the client tests and the CLI verb tests; one torch thread for a test that compares with a
worker's numbers; the engine's process-wide choices as the environment sets them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch

from noisefa.engine.process_choices import CHOICES, apply_settings
from noisefa.service.settings import get_settings
from noisefa.testing.deployments import DEPLOYMENT_MODES, Service, running_service


@pytest.fixture(scope="session", autouse=True)
def _engine_choices_from_the_environment() -> None:
    """The tests that train in this process follow ``NOISEFA_CUDA_GRAPHS`` and
    ``NOISEFA_PREFETCH_BATCHES`` as ``noisefa run`` does (e.g. graphs off on a GPU whose
    driver cannot capture)."""
    apply_settings(get_settings())


@pytest.fixture(autouse=True)
def _engine_choices_put_back() -> Iterator[None]:
    """A test that changes the engine's choices (a CLI verb run in this process applies the
    settings) leaves them as it found them for the next."""
    saved = dataclasses.replace(CHOICES)
    yield
    for field in dataclasses.fields(CHOICES):
        setattr(CHOICES, field.name, getattr(saved, field.name))


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
