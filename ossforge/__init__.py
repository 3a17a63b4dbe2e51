"""ossforge: an OSS-Instruct data factory orchestrated by Prefect."""

__version__ = "0.1.0"
