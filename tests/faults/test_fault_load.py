"""Load on loopback: many tiny jobs submitted at once, two workers; every job ends, none is
lost, none is duplicated (one job per submit, one attempt each, one row per metric point).

CI submits 30; ``NOISEFA_FULL=1`` submits 500 (also runnable as
``python benchmarks/load_jobs.py --jobs 500 --workers 2``, which prints the figures).
"""

from __future__ import annotations

from sqlalchemy import func, select

from noisefa.service.models import JobMetric
from noisefa.testing.load import run_load
from noisefa.testing.sizes import FULL

JOBS = 500 if FULL else 30
WORKERS = 2


def test_concurrent_jobs_all_end_none_lost_none_duplicated(stack):
    result = run_load(stack, JOBS, WORKERS)
    assert result.lost == 0
    assert result.duplicated_jobs == 0
    assert result.states == {"succeeded": JOBS}, result.report()
    assert result.attempts == {1: JOBS}, result.report()  # none ran twice
    assert result.duplicated_metric_points == 0
    with stack.sessions() as session:
        per_job = session.execute(
            select(JobMetric.job_id, func.count())
            .where(JobMetric.job_id.in_(result.ids))
            .group_by(JobMetric.job_id)
        ).all()
    # The same spec writes the same points: epochs 0 and 1 of every metric, for every job.
    assert len(per_job) == JOBS and len({count for _, count in per_job}) == 1
