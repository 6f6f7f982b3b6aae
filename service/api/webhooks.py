"""``/v1/webhook-secret`` (the project's signing key) and ``/v1/jobs/{id}/deliveries``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..repositories import webhooks as repo
from .deps import CurrentProject, ProjectJob, SessionDep
from .routing import SessionReleasingRoute

router = APIRouter(prefix="/v1", tags=["webhooks"], route_class=SessionReleasingRoute)


class WebhookSecretOut(BaseModel):
    """The key this project's webhook deliveries are signed with."""

    secret: str = Field(
        description="HMAC-SHA256 key: `X-Noisefa-Signature` is `sha256=` + hex HMAC of "
        "`<X-Noisefa-Timestamp>.<body>`."
    )


class DeliveryOut(BaseModel):
    """One webhook delivery of a job's state change."""

    id: int
    event: str = Field(description="`state`, `succeeded`, `failed` or `cancelled`.")
    url: str
    status: str = Field(description="`pending` (tried again later), `delivered` or `failed`.")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    payload: dict[str, Any]
    created_at: datetime
    delivered_at: datetime | None


class DeliveryList(BaseModel):
    """A job's deliveries, oldest first."""

    items: list[DeliveryOut]


@router.get("/webhook-secret", summary="Get the project's webhook signing secret")
def get_webhook_secret(project: CurrentProject, session: SessionDep) -> WebhookSecretOut:
    """Made on first request; every delivery of the project's jobs is signed with it."""
    return WebhookSecretOut(secret=repo.project_secret(session, project.id))


@router.get("/jobs/{job_id}/deliveries", summary="List a job's webhook deliveries")
def list_deliveries(job: ProjectJob, session: SessionDep) -> DeliveryList:
    """Every delivery of the job's ``notify`` webhook, with its tries and last answer."""
    rows = repo.deliveries_of(session, job.id)
    return DeliveryList(
        items=[DeliveryOut.model_validate(row, from_attributes=True) for row in rows]
    )
