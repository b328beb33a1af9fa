"""Run the nightly_migration example DAG end to end against a throwaway sshd.

What a new user sees first: the job starts on the host, the task defers
(no worker slot held), the job's lines stream into the task log as the
job prints them, and the run succeeds with the job's result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Airflow reads its configuration at import: set it up first.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="ssh-async-demo-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": "examples",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(REPO / "dags")},
        }
    ]
)

from tests.harness.sshd import start_server  # noqa: E402


def main() -> int:
    server = start_server()
    try:
        server.set_connection("ssh_async_db", "asyncdash")
        print(f"demo: throwaway sshd on 127.0.0.1:{server.port}, connection ssh_async_db -> asyncdash", flush=True)
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)

        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(str(REPO / "dags"))
        if bag.import_errors:
            print(f"demo: the example DAGs do not load: {bag.import_errors}", file=sys.stderr)
            return 1
        dag_run = bag.dags["nightly_migration"].test()
        [ti] = dag_run.get_task_instances()
        print(f"\ndemo: nightly_migration finished: run {dag_run.state}, task {ti.task_id} {ti.state}", flush=True)
        return 0 if dag_run.state == "success" else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
