"""The Remote jobs view in a real browser: Debian's headless Chromium driven by Selenium,
against the real stack (Airflow's own UI, the plugin's pages in its frames, the real sshd).

It logs in through Airflow's login page, opens the task instance's "Remote job" tab,
then "Remote jobs", watches a running job's output grow, kills it as the admin and sees
``cancelled``. With ``UI_SCREENSHOTS=DIR`` it saves the screenshots there (docs/ holds
the ones docs/ui.md shows: ``UI_SCREENSHOTS=docs``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import USER, RemoteJobs, job_processes
from tests.harness.airflow_stack import AirflowStack, wait_until
from tests.harness.sshd import home

pytestmark = [pytest.mark.e2e, pytest.mark.stacks("sqlite")]

DAG = "e2e_ui"  # async_dir ~/.airflow_async_ui: only these tests' jobs (dags/ssh_async_e2e.py)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = os.environ.get("UI_SCREENSHOTS", "")
# Prints a line every 0.3 s and a progress line with it, until killed.
MARKUP = '<img src=x onerror="document.title=1"><b>bold</b>'  # a job's output is text, never HTML
TICKER = (
    f"echo '{MARKUP}'; "
    'i=0; while true; do i=$((i+1)); echo "tick $i"; echo "step $i of many" >> "$AIRFLOW_ASYNC_PROGRESS"; '
    'if [ $((i % 10)) -eq 0 ]; then echo "note $i" >&2; fi; sleep 0.3; done'
)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1440,960",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver: object, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / name))  # type: ignore[attr-defined]


def login(driver: object, af: AirflowStack) -> None:
    from selenium.webdriver.common.by import By

    d = driver
    d.get(f"{af.base_url}/auth/login")  # type: ignore[attr-defined]
    user = wait_until(lambda: d.find_elements(By.NAME, "username"), 60, "the login form")[0]  # type: ignore[attr-defined]
    user.send_keys(af.username)
    d.find_element(By.NAME, "password").send_keys(af.password)  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()  # type: ignore[attr-defined]
    wait_until(lambda: d.get_cookie("_token"), 60, "the session cookie after login")  # type: ignore[attr-defined]


def enter_frame(driver: object, title: str) -> None:
    """Switch into the plugin's frame in Airflow's page, once it has loaded our page."""
    from selenium.webdriver.common.by import By

    d = driver
    d.switch_to.default_content()  # type: ignore[attr-defined]
    frame = wait_until(
        lambda: d.find_elements(By.CSS_SELECTOR, f"iframe[title='{title}']"),  # type: ignore[attr-defined]
        60,
        f"the {title!r} frame",
    )[0]
    d.switch_to.frame(frame)  # type: ignore[attr-defined]


def text_of(driver: object, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)  # type: ignore[attr-defined]
    return found[0].text if found else ""


def test_browser_logs_in_follows_a_job_kills_it_and_opens_the_task_tab(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, browser: object
) -> None:
    from selenium.webdriver.common.by import By

    af, d = airflow_stack, browser
    job_id = remote_jobs.new("browser")
    run_id = af.trigger_dag(DAG, conf={"job_id": job_id, "command": TICKER})
    af.wait_for_task_state(DAG, run_id, "job", "deferred", timeout=90)
    login(d, af)

    # The task instance's "Remote job" tab finds the try's job by itself.
    d.get(f"{af.base_url}/dags/{DAG}/runs/{run_id}/tasks/job/plugin/remote-job")  # type: ignore[attr-defined]
    enter_frame(d, "Remote job")
    wait_until(lambda: job_id in text_of(d, "#title"), 60, "the tab to show the job")
    wait_until(lambda: "tick 3" in text_of(d, "#stdout"), 60, "the job's stdout in the tab")
    assert MARKUP in text_of(d, "#stdout"), "the job's markup should show as text"
    assert not d.find_elements(By.CSS_SELECTOR, "#stdout img, #stdout b"), "the job's output became HTML"  # type: ignore[attr-defined]
    assert "running" in text_of(d, "#facts")
    d.switch_to.default_content()  # type: ignore[attr-defined]
    shot(d, "ui-task-instance-tab.png")

    # Remote jobs: the host's section lists the running job, with its DAG and last progress line.
    d.get(f"{af.base_url}/plugin/remote-jobs")  # type: ignore[attr-defined]
    enter_frame(d, "Remote jobs")
    d.execute_script(f"location.search = '?dag_id={DAG}'")  # type: ignore[attr-defined]
    d.switch_to.default_content()  # type: ignore[attr-defined]
    enter_frame(d, "Remote jobs")
    row = f"tr[data-job-id='{job_id}']"
    wait_until(lambda: d.find_elements(By.CSS_SELECTOR, row), 60, "the job's row")  # type: ignore[attr-defined]
    wait_until(lambda: "step" in text_of(d, f"{row} td.progress"), 30, "the last progress line")
    assert DAG in text_of(d, row) and "running" in text_of(d, row)
    d.switch_to.default_content()  # type: ignore[attr-defined]
    shot(d, "ui-remote-jobs.png")

    # The job's page: the output grows while we watch.
    enter_frame(d, "Remote jobs")
    d.find_element(By.CSS_SELECTOR, f"{row} a.job-link").click()  # type: ignore[attr-defined]
    wait_until(lambda: "tick" in text_of(d, "#stdout"), 60, "stdout on the job's page")
    seen = len(text_of(d, "#stdout"))
    wait_until(lambda: len(text_of(d, "#stdout")) > seen, 30, "stdout to grow")

    # Kill as the admin: confirm, then the state moves to cancelled before our eyes.
    grace = d.find_element(By.ID, "grace")  # type: ignore[attr-defined]
    grace.clear()
    grace.send_keys("1")
    d.find_element(By.ID, "kill").click()  # type: ignore[attr-defined]
    confirm = wait_until(
        lambda: (e := d.find_element(By.ID, "confirm-kill")).is_displayed() and e,  # type: ignore[attr-defined]
        10,
        "the confirmation",
    )
    assert job_processes(job_id), "the first click only asks"
    confirm.click()
    wait_until(lambda: "cancelled" in text_of(d, "#facts"), 60, "the state to read cancelled")
    wait_until(lambda: not job_processes(job_id), 20, "the job's process group to be gone")
    d.switch_to.default_content()  # type: ignore[attr-defined]
    shot(d, "ui-job-cancelled.png")

    # Airflow's dark theme: the frame follows the parent page.
    d.execute_script("localStorage.setItem('theme', 'dark')")  # type: ignore[attr-defined]
    d.refresh()  # type: ignore[attr-defined]
    enter_frame(d, "Remote jobs")
    wait_until(
        lambda: d.execute_script("return document.documentElement.classList.contains('dark')"),  # type: ignore[attr-defined]
        30,
        "the frame to take the dark theme",
    )
    wait_until(lambda: "cancelled" in d.find_element(By.TAG_NAME, "body").text, 60, "the page in the dark theme")  # type: ignore[attr-defined]
    d.switch_to.default_content()  # type: ignore[attr-defined]
    shot(d, "ui-job-dark.png")
    af.wait_for_dag_run(DAG, run_id, timeout=90)
    shutil.rmtree(home(USER) / ".airflow_async_ui" / job_id, ignore_errors=True)


def test_the_pages_never_show_the_secrets_a_job_prints(
    airflow_stack: AirflowStack,
    remote_jobs: RemoteJobs,
    browser: object,
    secret_values: dict[str, str],
    ui_secrets_dir: str,
) -> None:
    """Issue 21 in the browser: the job page and the list, while the job runs and after it ended."""
    import time
    from urllib.parse import urlencode

    from selenium.webdriver.common.by import By

    from tests.e2e.test_scenarios import release
    from tests.e2e.test_secrets import UI_DAG, VIEW_SECRETS_TTL, leaks

    af, d = airflow_stack, browser
    secrets = list(secret_values.values())
    job_id = remote_jobs.new("pagesecrets")
    folders = [home(USER) / ui_secrets_dir[2:] / (job_id + s) for s in ("", "-bg")]

    def page(job: str, *shown: str) -> str:
        query = urlencode({"conn_id": "test_asyncdash", "async_dir": ui_secrets_dir, "job_id": job})
        d.get(f"{af.base_url}/ssh-async/job?{query}")  # type: ignore[attr-defined]
        for text in shown:
            wait_until(lambda t=text: t in d.find_element(By.TAG_NAME, "body").text, 60, f"{text!r} on {job}'s page")  # type: ignore[attr-defined]
        return str(d.page_source) + d.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]

    try:
        run_id = af.trigger_dag(UI_DAG, conf={"job_id": job_id})
        af.wait_for_task_state(UI_DAG, run_id, "launched", "success", timeout=90)  # its job runs, no task waits
        login(d, af)
        running = page(job_id + "-bg", "dsn=postgres://app:***@db/app", "err ***", "step ***")
        assert not leaks(running, secrets), "the page of a running job shows a secret"
        release(remote_jobs, job_id)
        assert af.wait_for_dag_run(UI_DAG, run_id, timeout=120) == "success"
        time.sleep(VIEW_SECRETS_TTL)
        for job in (job_id, job_id + "-bg"):
            ended = page(job, "after=***/***/***", "api=*** ctx=*** tok=***", "succeeded")
            assert not leaks(ended, secrets), f"the page of ended job {job} shows a secret"
        d.get(f"{af.base_url}/ssh-async/?{urlencode({'dag_id': UI_DAG})}")  # type: ignore[attr-defined]
        row = f"tr[data-job-id='{job_id}-bg']"
        wait_until(lambda: "step ***" in text_of(d, f"{row} td.progress"), 60, "the masked progress line in the list")
        assert not leaks(str(d.page_source), secrets), "the list shows a secret"  # type: ignore[attr-defined]
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
