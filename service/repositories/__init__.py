"""Repository functions: every SQL statement of the service, one module per resource."""
