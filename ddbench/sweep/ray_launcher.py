"""The ``ray`` launcher: each unit is a Ray task asking for ``num_cpus``/``num_gpus``; Ray queues and places them.

``--address`` connects to a running cluster (``auto`` on a head node, ``ray://head:10001`` from outside);
without it a local cluster is started with this machine's resources (``--workers`` caps its CPUs). Ray's own
retries are off (``max_retries=0``): the driver retries a failed unit a bounded number of times for every launcher
alike. A task's Future comes from :meth:`ray.ObjectRef.future`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Sequence
from typing import Any

from ddbench.errors import UserError
from ddbench.sweep.launchers import Launcher, LaunchOptions, forwarded_env
from ddbench.sweep.units import Unit, UnitResult, execute

try:
    import ray
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise UserError("the ray launcher needs Ray: pip install 'ddbench[ray]'") from exc

logger = logging.getLogger(__name__)


class RayLauncher(Launcher):
    """Units as Ray tasks on a local or remote cluster."""

    name = "ray"

    def __init__(self, options: LaunchOptions) -> None:
        super().__init__(options)
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if options.address:
                ray.init(address=options.address, **kwargs)
            else:
                ray.init(num_cpus=options.workers, **kwargs)
            self._started = True
        self._task = ray.remote(max_retries=0)(execute)
        self.threads = max(1, int(options.cpus_per_unit))

    def submit(self, units: Sequence[Unit]) -> list[cf.Future[UnitResult]]:
        env = forwarded_env()
        task = self._task.options(num_cpus=self.options.cpus_per_unit, num_gpus=self.options.gpus_per_unit)
        return [task.remote(unit, env, self.threads).future() for unit in units]

    def describe(self) -> str:
        res = ray.cluster_resources()
        gpus = f", {res['GPU']:g} GPU(s)" if res.get("GPU") else ""
        return f"ray: {res.get('CPU', 0):g} CPU(s){gpus}, {self.options.cpus_per_unit:g} CPU per unit"

    def close(self) -> None:
        if self._started:
            ray.shutdown()
            self._started = False
