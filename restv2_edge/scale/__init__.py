"""Evaluation and the export matrix on a Ray cluster (``restv2-edge eval --ray``,
``restv2-edge bench matrix --ray``).

One job per module: ``shards`` (deterministic shards of the sorted image list),
``address`` (the ``--ray ADDRESS`` option), ``payload`` (shipping an artifact to a worker and
verifying it there), ``tasks`` (the worker-side functions), ``cluster`` (the only module that
imports ray: connect, submit with retries, collect), ``progress`` (one aggregated progress
record), ``resume`` (shard results kept next to the report). Ray is the optional extra
``restv2-edge[ray]`` and is imported only when ``--ray`` is given.
"""
