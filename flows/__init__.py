"""Prefect flows composed from the thin tasks in `tasks/`."""
