"""Settings of the fault-injection stack: fast heartbeats and a reaper that notices in seconds."""

from __future__ import annotations

HEARTBEAT_TIMEOUT_S = 4.0
# A job queued this long without starting is sent again (covers messages a Redis restart lost).
REQUEUE_AFTER_S = 10.0
# A fault stack: fast heartbeats, a reaper that notices within seconds, no job quota.
FAULT_SETTINGS = {
    "heartbeat_interval_s": "0.5",
    "heartbeat_timeout_s": str(HEARTBEAT_TIMEOUT_S),
    "reaper_interval_s": "0.5",
    "requeue_after_s": str(REQUEUE_AFTER_S),
    "cancel_poll_s": "0.2",
    "max_concurrent_jobs": "100000",
    "max_attempts": "3",
}
