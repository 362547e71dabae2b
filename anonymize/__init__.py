"""cdranon: turn unified-communications usage records into data that can be shared.

The library, in layers (see the README): definitions, readers, operators, policy, staging,
releases, gate, publishing and the run engine (``anonymize.run``). It never imports Prefect; the
flow in ``flows/`` hands the engine Prefect tasks to run its steps on.
"""

__version__ = "0.1.0"
