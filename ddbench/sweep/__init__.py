"""Scale-out: a sweep's grid expands into cached, idempotent units that run on an existing engine.

* :mod:`ddbench.sweep.grid`: the grid (flags or a TOML file) and its expansion into a DAG of units;
* :mod:`ddbench.sweep.units`: what one unit is, whether it is cached, and how a worker runs it (the pipeline's own
  entry points: teacher cache, distil shards, evaluation rows);
* :mod:`ddbench.sweep.records`: per-unit JSON records written beside the artifacts and their idempotent ingestion;
* :mod:`ddbench.sweep.launchers`: the launcher interface and its registry (``local``, ``ray``, ``slurm``);
* :mod:`ddbench.sweep.driver`: submits ready units, retries failures a bounded number of times, ingests records.

No scheduler lives here: units go to a process pool, Ray tasks or submitit (Slurm) jobs, which queue them.
"""
