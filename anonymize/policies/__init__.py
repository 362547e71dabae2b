"""The shipped default policy (``default.yaml``). Users pass their own with ``--policy``."""
