"""Celery worker: pulls a job id, runs engine phases, reports progress, metrics, checkpoints."""
