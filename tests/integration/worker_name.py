"""`[core] hostname_callable` for the Celery test: each worker reports the name the test gave it.

Both workers run on this one machine, so their real host names are the same; with
`AIRFLOW__CORE__HOSTNAME_CALLABLE=tests.integration.worker_name.hostname` a task instance's
`hostname` (REST API, UI) names the worker that ran it, as it would on two machines.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("BACKORDER_TEST_WORKER") or socket.getfqdn()
