"""Prefect flows and deployments: they only sequence the library's steps and report."""
