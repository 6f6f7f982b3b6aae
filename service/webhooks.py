"""Webhooks: who may be called, how a delivery is signed, and the loop that delivers.

- **Destinations**: a webhook URL's host must resolve to public addresses only (no
  loopback, link-local, private, multicast, reserved or unspecified one, IPv4 or IPv6), so a
  job cannot make the deployment call inside itself; an operator lets more hosts through with
  ``webhook_allowed_hosts``. Checked at submit (422 naming ``notify.url``) and again just
  before every try (the name may resolve elsewhere by then).
- **Signature**: ``X-Noisefa-Timestamp: <unix seconds>`` and
  ``X-Noisefa-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with the
  project's secret (``GET /v1/webhook-secret``). A receiver recomputes it and refuses old
  timestamps, so a captured delivery cannot be replayed later.
- **Delivery**: :class:`WebhookDispatcher`, a daemon thread in each API process, turns new
  state events into outbox rows and POSTs the due ones; a try that fails (no 2xx, a timeout,
  a refused host) is retried after ``webhook_retry_base_s`` × 2^(tries-1), up to
  ``webhook_max_attempts``. The outbox lives in the database, so a crash of any process
  loses no delivery (one may be sent twice: receivers dedupe on ``event_id``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy.orm import Session, sessionmaker

from .models import WebhookDelivery
from .periodic import PeriodicLoop
from .problems import FieldError, ProblemError
from .repositories import webhooks as repo
from .settings import Settings

log = logging.getLogger(__name__)

DISPATCH_INTERVAL_S = 1.0
SIGNATURE_HEADER = "X-Noisefa-Signature"
TIMESTAMP_HEADER = "X-Noisefa-Timestamp"


def refused_destination(url: str, settings: Settings) -> str | None:
    """Why the deployment will not call ``url``, or None when it may."""
    host = urlsplit(url).hostname
    if not host:
        return "the URL has no host"
    allowed = {name.lower() for name in settings.webhook_allowed_hosts}
    if host.lower() in allowed:
        return None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return f"host {host!r} does not resolve"
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if str(address) in allowed:
            continue
        if not address.is_global or address.is_multicast:
            return (
                f"host {host!r} resolves to {address}, a non-public address; an operator "
                "can allow it with NOISEFA_WEBHOOK_ALLOWED_HOSTS"
            )
    return None


def check_notify(spec: object, settings: Settings) -> None:
    """422 naming ``notify.url`` when the job's webhook may not be called."""
    notify = getattr(spec, "notify", None)
    if notify is None:
        return
    why = refused_destination(notify.url, settings)
    if why is not None:
        raise ProblemError(
            422,
            f"notify.url: {why}",
            slug="webhook-refused",
            title="Webhook destination refused",
            errors=[FieldError(field="notify.url", message=why)],
        )


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Noisefa-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def retry_delay(attempts_done: int, settings: Settings) -> timedelta | None:
    """The pause before the next try after ``attempts_done`` tries; None: give up."""
    if attempts_done >= settings.webhook_max_attempts:
        return None
    return timedelta(seconds=settings.webhook_retry_base_s * 2 ** (attempts_done - 1))


def deliver(session: Session, delivery: WebhookDelivery, settings: Settings) -> bool:
    """Make one try of ``delivery`` and record it; True when the receiver took it."""
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    status_code: int | None = None
    error = refused_destination(delivery.url, settings)
    if error is None:
        project_id = delivery.payload["project_id"]
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(repo.project_secret(session, project_id), timestamp, body),
            "User-Agent": "noisefa-webhooks",
        }
        try:
            response = httpx.post(
                delivery.url,
                content=body,
                headers=headers,
                timeout=settings.webhook_timeout_s,
                follow_redirects=False,  # a redirect could point inside the deployment
            )
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"answered {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
    ok = error is None
    retry_in = None if ok else retry_delay(delivery.attempts + 1, settings)
    repo.record_attempt(
        session, delivery.id, ok=ok, status_code=status_code, error=error, retry_in=retry_in
    )
    if not ok:
        log.info("webhook %d of job %s: %s", delivery.id, delivery.job_id, error)
    return ok


def dispatch_once(sessions: sessionmaker[Session], settings: Settings) -> int:
    """Queue new deliveries and make every due one; how many tries were made."""
    with sessions() as session:
        repo.queue_new_deliveries(session)
        due = repo.claim_due(session)
        for delivery in due:
            deliver(session, delivery, settings)
    return len(due)


class WebhookDispatcher(PeriodicLoop):
    """:func:`dispatch_once` every ``DISPATCH_INTERVAL_S`` on a daemon thread."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        super().__init__("webhooks", lambda: dispatch_once(sessions, settings), DISPATCH_INTERVAL_S)
