"""Reusable helpers for tests that need the real services (Postgres, Redis, a live API)."""
