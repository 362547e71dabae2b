"""Prefect flows and deployments of cdranon (the library in ``anonymize`` never imports Prefect).

``PREFECT_YAML`` is the path of the shipped ``prefect.yaml`` (deployments for a work pool).
"""

from pathlib import Path

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")
