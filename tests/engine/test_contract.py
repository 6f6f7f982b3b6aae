"""The contract package: torch-free, and its job kinds spelled once (``JobKind``)."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

from noisefa.engine.contract.bodies import BODY_MODELS, JobBody
from noisefa.engine.contract.states import JobKind

CHECK_DEADLINE_S = 120


def test_importing_every_contract_module_loads_no_torch():
    checked = subprocess.run(
        [sys.executable, "-m", "noisefa.testing.torch_free", "contract"],
        capture_output=True,
        text=True,
        timeout=CHECK_DEADLINE_S,
    )
    assert checked.returncode == 0, checked.stderr


def test_every_job_kind_has_exactly_one_body_model():
    models = get_args(get_args(JobBody)[0])
    spelled = [kind for model in models for kind in get_args(model.model_fields["kind"].annotation)]
    assert sorted(spelled) == sorted(JobKind)
    assert set(BODY_MODELS) == set(JobKind)
