"""pytest settings shared by ``tests/`` and ``notebooks/`` (``make test`` runs both).

Under pytest-xdist (``make test`` starts one worker per core this process may run on) each worker gets its
share of the cores as ``OMP_NUM_THREADS``, which torch reads when it is imported and which the
processes a test starts inherit (a notebook's kernel, the ranks of a DDP launch). Two workers
with two threads each on two cores would wait on each other: tiny models gain little from a
second thread, so one test per core gets more done. A value already set wins.
"""

import os

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (cores or 1) // workers)))
