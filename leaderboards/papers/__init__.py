"""Published numbers (``*.csv``), installed as the ``ddbench_papers`` package so ``--with-paper`` works from a wheel."""
