"""The Airflow plugin: mounts the Remote jobs app and adds it to the UI.

Registered by the provider's own entry point (``airflow.plugins`` in
setup.cfg), so ``pip install`` is all it takes. Two external views: the
"Remote jobs" page in the navigation, and a "Remote job" tab on every task
instance (Airflow 3.3 shows a task-instance view on every task; on a task of
another operator the tab says so).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_ssh_async.ui.app import URL_PREFIX, app


class SSHAsyncJobsPlugin(AirflowPlugin):
    name = "ssh_async_jobs"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "SSH async: Remote jobs"}]
    external_views = [
        {
            "name": "Remote jobs",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "remote-jobs",
            "nav_top_level": True,
        },
        {
            "name": "Remote job",
            "href": f"{URL_PREFIX}/ti?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "remote-job",
        },
    ]
