"""kocap: Korean video captioning lifecycle (library; importable without Prefect)."""

__version__ = "0.1.0"
