"""cdranon: turn unified-communications usage records into data that can be shared.

The library: readers, contracts, policy, keys, operators, publishing and synthetic data. It never
imports Prefect; the flows in ``flows/`` only sequence these functions.
"""

__version__ = "0.1.0"
