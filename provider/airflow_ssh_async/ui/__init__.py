"""The "Remote jobs" view in the Airflow UI (an Airflow plugin the provider registers itself).

plugin.py: what Airflow loads (entry point ``airflow.plugins``); app.py: the
FastAPI app and its routes; access.py: authentication and permissions;
hosts.py: the shared per-host cache; sources.py: Airflow's records;
records.py: pure rules; static/: the pages (plain HTML, JS, CSS).
"""
