"""Data stages: ingest (AI-Hub or the embedded sample -> raw files + manifest)."""
