"""ossforge: an OSS-Instruct data factory orchestrated by Prefect. The front door: CLI and runtime."""

from tasks.core.version import VERSION as __version__  # noqa: F401
