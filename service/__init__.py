"""The HTTP service: API, auth, settings and persistence. Owns the schema."""
