"""The docs' code runs: every example in README.md and docs/*.md, against the test sshd.

Fenced blocks by info string:
- ``python``: a complete DAG file. Written to a bundle folder (tests/dags/_docs,
  created here and removed after), loaded with DagBag and run with dag.test();
  every task must succeed unless the info string says ``expect:TASK=STATE``.
- ``python before``: a peer's DAG (the "before" of a migration guide): it must
  import and parse, it is not run.
- ``python fragment``: not run (kept to a minimum; counted below).
- ``console``: each ``$ airflow-ssh-async ...`` line is run through ``cli.main``
  (the console script's entry point), with ``--async-dir`` of the test's own
  added; the exit code must be 0, or N for ``console exit=N``. Each
  documented output line's first word must appear in the real output, and a
  documented JSON output must have the real output's keys.
- ``json <name>``: a documented shape (result, event, ref, job.json,
  result.json) compared key by key with the real thing.
- ``yaml``: Ansible playbooks of the migration guide: must parse.
- ``text``: prose layouts, not code.

Besides: the troubleshooting messages must occur in the code, the
reference's parameter tables must name every parameter the classes take, and
no table row anywhere in the docs may say a parameter is (or is not)
templated against the class's ``template_fields``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.harness.become import sudoers_file
from tests.harness.sshd import HarnessError, home

pytestmark = pytest.mark.timeout(300)

DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
DOCS_DAGS = REPO / "tests" / "dags" / "_docs"
SCRIPT = Path(sys.executable).parent / "airflow-ssh-async"
PROVIDER = REPO / "provider" / "airflow_ssh_async"
KNOWN = {"python", "console", "json", "yaml", "text"}
MAX_FRAGMENTS = 2
CONSOLE_JOB = "nightly-migrate"
CONSOLE_CONN = "ssh_async_db"
CONSOLE_USER = "asyncdash"
ANSIBLE_JID = (
    "123456789012.4242"  # the jid in migrating-from-ansible.md  # tests/conftest.py points ssh_async_db at this user
)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    tags: tuple[str, ...]
    text: str

    @property
    def name(self) -> str:
        return f"{self.doc.name}:{self.line}"

    def tag(self, prefix: str) -> str | None:
        return next((t[len(prefix) :] for t in self.tags if t.startswith(prefix)), None)


FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text()
    found = []
    for m in FENCE.finditer(text):
        info = m.group(1).split()
        line = text.count("\n", 0, m.start()) + 1
        found.append(Block(doc, line, info[0] if info else "", tuple(info[1:]), m.group(2)))
    return found


ALL = [b for doc in DOCS for b in blocks(doc)]
DAG_BLOCKS = [b for b in ALL if b.lang == "python" and not b.tags]
BEFORE_BLOCKS = [b for b in ALL if b.lang == "python" and "before" in b.tags]
CONSOLE_BLOCKS = [b for b in ALL if b.lang == "console"]
JSON_BLOCKS = [b for b in ALL if b.lang == "json"]


def test_every_docs_block_is_a_kind_we_run_or_check() -> None:
    docs_blocks = [b for b in ALL if b.doc.parent.name == "docs"]
    unknown = [b.name for b in docs_blocks if b.lang not in KNOWN]
    assert not unknown, f"fenced blocks with no (or an unknown) language: {unknown}"
    python_tags = {t for b in ALL if b.lang == "python" for t in b.tags}
    assert python_tags <= {"fragment", "before"}, python_tags
    fragments = [b.name for b in ALL if b.lang == "python" and "fragment" in b.tags]
    assert len(fragments) <= MAX_FRAGMENTS, f"too many python fragments that are not run: {fragments}"
    assert [b for b in DAG_BLOCKS if b.doc.name == "README.md"], "README.md's example must be a runnable DAG"
    assert len(DAG_BLOCKS) >= 6 and CONSOLE_BLOCKS and JSON_BLOCKS


def test_yaml_blocks_parse() -> None:
    import yaml

    for b in (b for b in ALL if b.lang == "yaml"):
        assert yaml.safe_load(b.text), b.name


# --- the python DAG examples ----------------------------------------------------------


def dag_id_of(block: Block) -> str:
    m = re.search(r"""DAG\(\s*(?:dag_id=)?["']([^"']+)["']""", block.text)
    assert m, f"{block.name}: no literal dag id"
    return m.group(1)


def file_name(block: Block) -> str:
    return f"{block.doc.stem.replace('-', '_').lower()}_{block.line}.py"


@pytest.fixture(scope="module")
def readme_host(sshd: Any) -> Iterator[None]:
    """What the examples assume exists: for README's, a `db_host` connection, a
    `db` connection with a password and the migration program on the host;
    for the Ansible one, a job that Ansible ran."""
    import os

    sshd.set_connection("db_host", CONSOLE_USER)
    os.environ["AIRFLOW_CONN_DB"] = json.dumps({"conn_type": "generic", "password": "s3cret"})
    program = Path("/opt/app/bin/migrate")
    created = not program.exists()
    if created:
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text(
            '#!/bin/sh\n[ "$DB_PASSWORD" = s3cret ] || { echo "no DB_PASSWORD" >&2; exit 2; }\necho "migrated $*"\n'
        )
        program.chmod(0o755)
    # migrating-from-ansible.md watches a job Ansible ran: its result file,
    # as async_wrapper leaves it for a finished `shell` task.
    ansible_file = home("asyncbash") / ".ansible_async" / ANSIBLE_JID
    ansible_file.parent.mkdir(exist_ok=True)
    ansible_file.write_text(
        json.dumps(
            {
                "changed": True,
                "rc": 0,
                "stdout": "archived",
                "stderr": "",
                "msg": "",
                "start": "2026-03-02 01:00:00.000001",
                "end": "2026-03-02 01:00:03.000001",
                "delta": "0:00:03.000000",
                "cmd": "tar -czf /tmp/etc-backup.tgz -C /etc hostname passwd",
            }
        )
    )
    shutil.chown(ansible_file.parent, "asyncbash", "asyncbash")
    shutil.chown(ansible_file, "asyncbash", "asyncbash")
    # README's "Running as another user": the login may become postgres
    # (the user dev/setup.sh's postgresql brings), as the sudoers line it shows.
    if shutil.which("sudo") is None:
        raise HarnessError("sudo is missing: run dev/setup.sh (README's become_user example needs it)")
    postgres_jobs = home("postgres") / ".airflow_async"
    postgres_jobs_existed = postgres_jobs.exists()
    try:
        with sudoers_file(f"{CONSOLE_USER} ALL=(postgres) NOPASSWD: /bin/sh\n"):
            yield
    finally:
        if not postgres_jobs_existed:
            shutil.rmtree(postgres_jobs, ignore_errors=True)
        ansible_file.unlink(missing_ok=True)
        if created:
            shutil.rmtree("/opt/app", ignore_errors=True)
        os.environ.pop("AIRFLOW_CONN_DB", None)
        os.environ.pop("AIRFLOW_CONN_DB_HOST", None)


@pytest.fixture(scope="module")
def docs_bag(airflow_db: None, sshd: Any, readme_host: None) -> Iterator[Any]:
    """The docs' DAG files in a bundle folder (tests/dags is the `tests` bundle)."""
    from airflow.dag_processing.dagbag import DagBag

    assert not DOCS_DAGS.exists(), f"{DOCS_DAGS} is left from an earlier run: remove it"
    DOCS_DAGS.mkdir(parents=True)
    try:
        for b in DAG_BLOCKS + BEFORE_BLOCKS:
            (DOCS_DAGS / file_name(b)).write_text(b.text)
        bag = DagBag(str(DOCS_DAGS))
        assert not bag.import_errors, bag.import_errors
        yield bag
    finally:
        shutil.rmtree(DOCS_DAGS, ignore_errors=True)


def test_dag_ids_are_unique() -> None:
    ids = [dag_id_of(b) for b in DAG_BLOCKS + BEFORE_BLOCKS]
    assert len(ids) == len(set(ids)), ids


def test_before_examples_of_the_migration_guides_parse(docs_bag: Any) -> None:
    for b in BEFORE_BLOCKS:
        assert dag_id_of(b) in docs_bag.dags, b.name


@pytest.mark.parametrize("block", DAG_BLOCKS, ids=[b.name for b in DAG_BLOCKS])
def test_dag_example_runs(block: Block, docs_bag: Any) -> None:
    dag = docs_bag.dags[dag_id_of(block)]
    expected = dict(t.split("=", 1) for t in (x[len("expect:") :] for x in block.tags if x.startswith("expect:")))
    dag_run = dag.test()
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {t: expected.get(t, "success") for t in dag.task_ids}, f"{block.name}: {states}"


# --- the console examples ---------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleJob:
    """The docs' `nightly-migrate` in an async_dir of this test's own (the docs' commands get
    ``--async-dir`` added): another run sharing the SSH user's home never meets it."""

    async_dir: str  # as given to the CLI: ~/docs-console-<hex>
    release: Path  # the job prints `step 1`, then holds until this file exists

    def release_now(self) -> None:
        self.release.touch()


@pytest.fixture
def console_job(sshd: Any) -> Iterator[ConsoleJob]:
    """A fresh `nightly-migrate` on ssh_async_db that runs until the test lets it end: the
    examples show it running, then follow its three lines to the end. A fixed-length job
    would end before a slow console script starts on a busy machine."""
    from airflow_ssh_async.hooks import SSHAsyncJobHook

    name = f"docs-console-{uuid.uuid4().hex[:10]}"
    folder = home(CONSOLE_USER) / name
    job = ConsoleJob(f"~/{name}", home(CONSOLE_USER) / f"{name}-release")
    hook = SSHAsyncJobHook(CONSOLE_CONN, async_dir=job.async_dir)
    hold = f"while [ ! -e {shlex.quote(str(job.release))} ]; do sleep 0.1; done"
    hook.launch(CONSOLE_JOB, f'echo "step 1"; {hold}; echo "step 2"; echo "step 3"')
    try:
        yield job
    finally:
        job.release_now()  # ends the job if a command failed before the follow
        deadline = time.monotonic() + 30
        d = hook.job_dir(CONSOLE_JOB)
        while not hook.status([d])[d][0].state.finished and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)
        job.release.unlink(missing_ok=True)


def takes_async_dir(subcommand: str) -> bool:
    """Whether the CLI's SUBCOMMAND has an ``--async-dir`` option (host-key has none)."""
    from airflow_ssh_async import cli

    [sub] = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser = sub.choices.get(subcommand)
    return parser is not None and any("--async-dir" in a.option_strings for a in parser._actions)


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command line, documented output lines) pairs."""
    out: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            assert out, f"{block.name}: output before any command"
            out[-1][1].append(line)
    return out


@pytest.mark.parametrize("block", CONSOLE_BLOCKS, ids=[b.name for b in CONSOLE_BLOCKS])
def test_console_example_runs(
    block: Block, console_job: ConsoleJob, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Each command runs through ``cli.main``, what the console script calls, in this process:
    a fresh interpreter per command costs seconds of imports, which test_cli's process tests
    already pay for the script itself (exit status, one-line errors, no traceback)."""
    from airflow_ssh_async import cli

    assert SCRIPT.exists(), f"{SCRIPT} is missing: pip install -e the repo"
    want = int(block.tag("exit=") or 0)
    for command, documented in commands(block):
        argv = shlex.split(command)
        assert argv[0] == "airflow-ssh-async", f"{block.name}: only airflow-ssh-async commands are run: {command}"
        if "--follow" in argv:
            console_job.release_now()  # what the docs show before it saw the job running
        if len(argv) > 1 and takes_async_dir(argv[1]) and "--async-dir" not in argv:
            argv += ["--async-dir", console_job.async_dir]
        capsysbinary.readouterr()
        code = cli.main(argv[1:])
        captured = capsysbinary.readouterr()
        stdout, real = captured.out.decode(), (captured.out + captured.err).decode()
        assert code == want, f"{block.name}: `{command}` exited {code}, not {want}:\n{real}"
        assert "Traceback" not in real, real
        text = "\n".join(documented)
        if text.lstrip().startswith("{"):
            assert set(json.loads(text)) == set(json.loads(stdout)), f"{block.name}: `{command}` keys differ"
            continue
        for line in documented:
            word = line.split()[0] if line.split() else ""
            assert word in real, f"{block.name}: `{command}` printed no {word!r}:\n{real}"


# --- documented shapes against real ones -----------------------------------------------------


@pytest.fixture(scope="module")
def real_shapes(sshd: Any) -> dict[str, dict[str, Any]]:
    """A real job's event, result, reference, job.json and result.json."""
    import asyncio
    import logging

    from airflow_ssh_async.hooks import SSHAsyncJobHook
    from airflow_ssh_async.job import JobRef
    from airflow_ssh_async.watch import watch_job

    hook = SSHAsyncJobHook(f"test_{CONSOLE_USER}")
    job_id = f"docs-{uuid.uuid4().hex[:10]}"
    # protocol.md: the job gets the SSH session's umask and LC_ALL, not the launcher's.
    launched = hook.launch(job_id, 'umask; echo "$LC_ALL"')
    ref = JobRef(f"test_{CONSOLE_USER}", job_id, launched.job_dir)
    event = asyncio.run(watch_job(hook, ref, log=logging.getLogger("docs"), poll_interval=0.5))
    folder = home(CONSOLE_USER) / ".airflow_async" / job_id
    shapes = {
        "event": event,
        "result": event["result"],
        "ref": event["job"],
        "job.json": json.loads((folder / "job.json").read_text()),
        "result.json": json.loads((folder / "result.json").read_text()),
    }
    hook.archive(launched.job_dir, remove=True)
    return shapes


def test_the_job_environment_is_as_documented(real_shapes: dict[str, dict[str, Any]]) -> None:
    # The test sshd inherits this process's umask; sshd gives sessions no LC_ALL.
    session_umask = os.umask(0)
    os.umask(session_umask)
    assert real_shapes["result"]["stdout_tail"] == f"{session_umask:04o}\n\n"


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=[b.name for b in JSON_BLOCKS])
def test_documented_shape_matches(block: Block, real_shapes: dict[str, dict[str, Any]]) -> None:
    [kind] = block.tags
    documented = json.loads(block.text)
    real = real_shapes[kind]
    assert set(documented) == set(real), f"{block.name}: documented {sorted(documented)}, real {sorted(real)}"
    if kind == "event":
        assert set(documented["job"]) == set(real["job"])


# --- troubleshooting messages and parameter tables ---------------------------------------------


def source_text() -> str:
    text = "\n".join(p.read_text() for p in sorted(PROVIDER.rglob("*")) if p.suffix in (".py", ".sh"))
    # Join implicitly concatenated string literals ("a " "b", across lines).
    return re.sub(r"""(["'])\s*\n?\s*[rbf]*\1""", "", text)


def test_troubleshooting_messages_occur_in_the_code() -> None:
    code = source_text()
    rows = re.findall(r"^\| `([^`]+)` \|", (REPO / "docs" / "troubleshooting.md").read_text(), re.M)
    assert len(rows) >= 40, rows
    missing = []
    for message in rows:
        for piece in message.split("…"):
            piece = piece.strip(" .,:;()'")
            if len(piece) >= 4 and piece not in code:
                missing.append(f"{message!r}: {piece!r}")
    assert not missing, "messages in troubleshooting.md that the code does not have:\n" + "\n".join(missing)


def section(doc: str, heading: str) -> str:
    text = (REPO / "docs" / doc).read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


@pytest.mark.parametrize(
    "heading,cls",
    [
        ("SSHAsyncJobOperator", "airflow_ssh_async.operators.SSHAsyncJobOperator"),
        ("SSHAsyncJobSensor", "airflow_ssh_async.sensors.SSHAsyncJobSensor"),
        ("SSHAsyncJobTrigger", "airflow_ssh_async.triggers.SSHAsyncJobTrigger"),
    ],
)
def test_reference_names_every_parameter(heading: str, cls: str) -> None:
    import importlib

    module, name = cls.rsplit(".", 1)
    klass = getattr(importlib.import_module(module), name)
    params = [p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")]
    documented = set(re.findall(r"^\| `(\w+)` \|", section("reference.md", heading), re.M))
    assert set(params) == documented, f"{heading}: code {sorted(params)}, docs {sorted(documented)}"
    if hasattr(klass, "template_fields"):
        templated = section("reference.md", heading).split("**Templated:**", 1)[1].split("\n\n", 1)[0]
        assert set(re.findall(r"`(\w+)`", templated)) == set(klass.template_fields), heading


# --- claims about templating, in every doc ---------------------------------------------------------

# Table column headers that name our operator's or sensor's parameters.
CLASS_COLUMNS = {"SSHAsyncJobOperator": "SSHAsyncJobOperator", "SSHAsyncJobSensor": "SSHAsyncJobSensor"}


def templating_claim(note: str) -> bool | None:
    """What a table row's text says about OUR parameter being templated, or None."""
    t = note.lower()
    if "templat" not in t:
        return None
    if re.search(r"\bours is not\b|\bours isn't\b|\bnot templated\b", t):
        return False
    if "theirs" in t and not re.search(r"\bboth templated\b|\bours is templated\b", t):
        return None  # a claim about the other tool only
    return True


def templating_claims() -> list[tuple[str, str, str, bool]]:
    """(where, class, parameter, templated?) for every docs table row that says so."""
    claims = []
    for doc in DOCS:
        heading, column, klass = "", None, None
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("#"):
                heading, column, klass = line.lstrip("# ").strip(), None, None
                continue
            if not line.startswith("|"):
                column = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if column is None:  # a header row
                for i, cell in enumerate(cells):
                    if cell.strip("`") in CLASS_COLUMNS:
                        column, klass = i, cell.strip("`")
                    elif cell == "parameter" and heading in CLASS_COLUMNS:
                        column, klass = i, heading
                if column is None:
                    column = -1
                continue
            if column < 0 or set(line) <= set("|-: "):
                continue
            name = re.match(r"`(\w+)`", cells[column]) if column < len(cells) else None
            claim = templating_claim(" ".join(c for i, c in enumerate(cells) if i != column))
            if name and claim is not None:
                claims.append((f"{doc.name}:{n}", klass, name.group(1), claim))
    return claims


def test_templating_claims_agree_with_template_fields() -> None:
    from airflow_ssh_async import SSHAsyncJobOperator, SSHAsyncJobSensor

    fields = {
        "SSHAsyncJobOperator": SSHAsyncJobOperator.template_fields,
        "SSHAsyncJobSensor": SSHAsyncJobSensor.template_fields,
    }
    claims = templating_claims()
    assert any(c[2] == "async_dir" for c in claims), claims  # the guide's row is seen
    wrong = [
        f"{where}: `{param}` of {klass} is said {'' if said else 'not '}templated"
        for where, klass, param, said in claims
        if (param in fields[klass]) != said
    ]
    assert not wrong, "docs contradict template_fields:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("note", "claim"),
    [
        ("Theirs is templated, ours is not.", False),
        ("Both templated. Ours defaults to `~/.airflow_async`.", True),
        ("Not templated.", False),
        ("Templated.", True),
        ("Theirs is templated.", None),
        ("Ours defaults to 10.", None),
    ],
)
def test_templating_claim_reads_what_a_row_says_about_ours(note: str, claim: bool | None) -> None:
    assert templating_claim(note) is claim


# --- the README's Install and Connections sections, the example DAGs' docstrings -------------------


def readme_section(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_install_section_names_the_package_and_the_versions_setup_cfg_supports() -> None:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    install = readme_section("Install")
    assert f"pip install {cfg['metadata']['name']}" in install
    assert "pip install ./airflow-provider-ssh-async" in install
    requires = cfg["options"]["install_requires"]
    assert "apache-airflow>=3.3,<4" in requires and "Airflow 3.3 or later, below 4" in install
    assert cfg["options"]["python_requires"] == ">=3.10" and "Python 3.10\nor later" in install
    for component in ("DAG processor", "workers", "triggerer"):
        assert f"| {component} |" in install, component
    assert "key_file" in install and "known_hosts" in install


def connection_examples() -> dict[str, dict[str, Any]]:
    """The README's connection, as the CLI form and as the env var form."""
    section = readme_section("Connections")
    cli = re.search(r"airflow connections add (\w+) --conn-json '(.*?)'\n", section, re.S)
    env = re.search(r"export AIRFLOW_CONN_(\w+)='(.*?)'\n", section)
    assert cli and env, "the README must show `airflow connections add --conn-json` and AIRFLOW_CONN_"
    assert cli.group(1).upper() == env.group(1)
    return {"cli": {"conn_id": cli.group(1), **json.loads(cli.group(2))}, "env": json.loads(env.group(2))}


def test_readme_connection_forms_are_one_connection_that_the_provider_reads() -> None:
    from airflow.models.connection import Connection

    from airflow_ssh_async.connection import options_from_connection

    forms = connection_examples()
    conn_id = forms["cli"].pop("conn_id")
    assert forms["cli"] == forms["env"], "the --conn-json and AIRFLOW_CONN_ forms differ"
    body = forms["env"]
    conn = Connection(conn_id=conn_id, **{k: json.dumps(v) if k == "extra" else v for k, v in body.items()})
    options = options_from_connection(conn)
    assert (options.host, options.port, options.username) == ("db1.example.com", 22, "deploy")
    assert options.host_key == body["extra"]["host_key"] and options.key_file == body["extra"]["key_file"]
    ui = readme_section("Connections")
    for field in (f"Connection Id `{conn_id}`", "Connection Type `SSH`", "Host `db1.example.com`", "Login `deploy`"):
        assert field in ui, field


def test_readme_connection_example_connects_with_the_real_hosts_values(sshd: Any, monkeypatch: Any) -> None:
    """The example's shape, with the test host's address and keys in it, reaches a real sshd."""
    from airflow_ssh_async.hooks import SSHAsyncJobHook

    body = connection_examples()["env"]
    body.update(host="127.0.0.1", port=sshd.port, login=CONSOLE_USER)
    body["extra"].update(key_file=str(sshd.client_key), host_key=sshd.host_key_line)
    monkeypatch.setenv("AIRFLOW_CONN_SSH_ASYNC_README", json.dumps(body))
    status, _ = SSHAsyncJobHook("ssh_async_readme").status(["~/.airflow_async/none"])["~/.airflow_async/none"]
    assert status.state.value == "missing"


@pytest.mark.parametrize("dag_file", sorted((REPO / "dags").glob("*.py")), ids=lambda p: p.name)
def test_example_dags_name_their_connections_and_say_how_to_create_them(dag_file: Path) -> None:
    import ast

    tree = ast.parse(dag_file.read_text())
    doc = ast.get_docstring(tree) or ""
    text = dag_file.read_text()
    ids = set(re.findall(r'ssh_conn_id="(\w+)"', text))
    for group in re.findall(r"ssh_conn_id=\[([^\]]*)\]", text):
        ids |= set(re.findall(r'"(\w+)"', group))
    assert ids, f"{dag_file.name} names no connection"
    readme = (REPO / "README.md").read_text()
    for conn_id in ids:
        assert f"airflow connections add {conn_id} --conn-json" in doc, (dag_file.name, conn_id)
        assert f"``{conn_id}``" in doc and f"`{conn_id}`" in readme, conn_id
