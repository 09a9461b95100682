"""Security properties, checked on the repository and through the real CLI.

- No secret in the files git tracks (or would add): no private keys, cloud keys or
  tokens, no literal password; ``.env`` is ignored, ``.env.example`` has placeholders.
- Published ports bind to loopback unless the user opens them.
- No unsafe deserialisation or code evaluation in ``pipeline/`` and ``models/`` (AST scan).
- The MLflow servers (``initstudy ui`` and ``deploy/mlflow-server.sh``) pass
  ``--allowed-hosts`` where the installed MLflow has it; the Ray scripts run Ray with
  ``RAY_AUTH_MODE=token``.
- Names made from user input stay inside their folder: run names of hostile specs, study
  names (``run``, ``--study-name`` and every command's STUDY argument refuse ``../x``),
  and report folders.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from cluster.test_compose import run_script
from conftest import SmokeRun
from hypothesis import given, settings
from hypothesis import strategies as st

from models import TrialSpec
from pipeline import cli, ui
from pipeline.studyspec import is_study_name
from pipeline.tracking import run_name

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke_tiny.yaml"
DEPLOY = ROOT / "deploy"

# ---------------------------------------------------------------- secrets

PLACEHOLDERS = {"", "change-me", "changeme", "***", "...", "-", "none", "null", "x"}
"""Values a secret-named setting may have in a tracked file."""
TEST_DUMMIES = {"hunter2", "secret", "not-the-token", "test-only"}
"""Fake credentials that tests use to check that secrets are redacted or refused."""
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "OpenAI-style key": re.compile(r"\bsk-[A-Za-z0-9_-]{32,}\b"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
}
SECRET_SETTING = re.compile(
    r"""(?ix)
    (?P<key>[a-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)[a-z0-9_]*)
    ["']?\s*(?:=|:)\s*
    (?P<quote>["']?)(?P<value>[^\s"'`,;)}\]]*)
    """
)
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/\s@'\"]+:(?P<value>[^@\s/'\"]+)@")


def repository_files() -> list[Path]:
    """Files git tracks, plus new ones it does not ignore (what a commit would add)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()]


def is_placeholder(value: str) -> bool:
    """Not a secret: a reference (``$VAR``, ``${VAR:?...}``, ``<...>``, ``{...}``), code
    (``self.token``, ``secrets.token_hex(32)``), a known placeholder or test dummy, or a
    short plain word (``token: dead`` in a test, ``password: libpq`` in prose)."""
    value = value.strip()
    return (
        value.lower() in PLACEHOLDERS
        or value in TEST_DUMMIES
        or value.startswith(("$", "<", "{", "%"))
        or bool(re.search(r"[.(\[]", value))
        or (len(value) < 8 and value.isalpha())
    )


def secrets_in(text: str, suffix: str) -> list[str]:
    """What looks like a secret in a file's text: ``line: what`` for each finding."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for what, pattern in SECRET_PATTERNS.items():
            if pattern.search(line):
                found.append(f"{n}: {what}")
        for match in SECRET_SETTING.finditer(line):
            value = match["value"]
            literal = bool(match["quote"]) or suffix != ".py"  # unquoted in Python: code
            if literal and not is_placeholder(value) and not value.isdigit():
                found.append(f"{n}: {match['key']} = {value!r}")
        for match in URL_PASSWORD.finditer(line):
            if not is_placeholder(match["value"]):
                found.append(f"{n}: password in a URL")
    return found


def test_the_secret_scan_finds_planted_secrets() -> None:
    # Built by concatenation, so this file itself holds none of them.
    planted = {
        ".pem": "-----BEGIN RSA " + "PRIVATE KEY-----",
        ".py": "aws = 'AKIA" + "Q3EGRXJX4RZ7ZJ2K'",
        ".yml": "POSTGRES_PASSWORD: " + "s3cr3t-Pa55",
        ".env": "RAY_AUTH_TOKEN=" + "9f2c0d6e4b",
        ".sh": "export DB=postgresql://app:" + "Tr0ub4dor@db/optuna",
        ".md": "token: ghp_" + "a" * 36,
    }
    for suffix, text in planted.items():
        assert secrets_in(text, suffix), (suffix, text)
    for text in ("POSTGRES_PASSWORD=change-me", "token = secrets.token_hex(32)", "x: ${T:?set}"):
        assert secrets_in(text, ".env") == [], text


@pytest.mark.slow  # it reads every file of the repository
def test_no_secrets_in_the_repository() -> None:
    files = repository_files()
    assert len(files) > 20
    found = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary files (images) hold no settings
        found += [f"{path.relative_to(ROOT)}:{hit}" for hit in secrets_in(text, path.suffix)]
    assert found == []


def test_env_is_ignored_and_the_example_has_only_placeholders() -> None:
    tracked = [p.relative_to(ROOT).as_posix() for p in repository_files()]
    assert ".env" not in tracked
    check = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert check.returncode == 0, ".env must be git-ignored"
    settings_ = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    secrets = {k: v for k, v in settings_.items() if re.search("PASSWORD|TOKEN|SECRET|KEY", k)}
    assert secrets, "the example names the secrets to set"
    assert set(secrets.values()) == {"change-me"}, secrets


# ---------------------------------------------------------------- exposure


@pytest.mark.parametrize(
    "compose_file", [ROOT / "docker-compose.yml", DEPLOY / "docker-compose.gpu.yml"]
)
def test_compose_publishes_ports_on_loopback_only(compose_file: Path) -> None:
    loopback = ("127.0.0.1:", "${BIND_ADDRESS:-127.0.0.1}:")
    data = yaml.safe_load(compose_file.read_text())
    for name, service in (data.get("services") or {}).items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") in ("127.0.0.1", "${BIND_ADDRESS:-127.0.0.1}"), name
            else:
                assert str(port).startswith(loopback), f"{name}: {port} is not on loopback"
    assert "BIND_ADDRESS=127.0.0.1" in (ROOT / ".env.example").read_text().splitlines()


UNSAFE_CALLS = {
    "pickle.load",
    "pickle.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "dill.load",
    "dill.loads",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "yaml.load",
    "yaml.load_all",
    "yaml.unsafe_load",
    "yaml.full_load",
    "torch.load",
    "pd.read_pickle",
    "pandas.read_pickle",
    "numpy.load",
    "np.load",
    "os.system",
    "os.popen",
    "eval",
    "exec",
    "compile",
    "__import__",
}


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def unsafe_calls_in(source: str) -> list[str]:
    """Calls that deserialise or evaluate data unsafely, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            if name in UNSAFE_CALLS:
                found.append(f"{line}: {name}()")
            for kw in node.keywords:
                if kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value:
                    found.append(f"{line}: {name}(shell=True)")
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "marshal", "dill"):
            found.append(f"{line}: from {node.module} import ...")
        if isinstance(node, ast.Import):
            found += [f"{line}: import {a.name}" for a in node.names if a.name == "pickle"]
    return found


def test_the_ast_scan_finds_planted_calls() -> None:
    planted = [
        "import yaml\nyaml.load(open(p))",
        "import pickle",
        "from pickle import loads",
        "torch.load(path)",
        "eval(text)",
        "exec(code)",
        "subprocess.run(cmd, shell=True)",
    ]
    for source in planted:
        assert unsafe_calls_in(source), source
    assert unsafe_calls_in("yaml.safe_load(text)\njson.loads(s)\nsubprocess.run([a])") == []


def test_no_unsafe_loading_or_evaluation_in_the_package() -> None:
    files = sorted([*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "models").rglob("*.py")])
    assert len(files) > 10
    found = []
    for path in files:
        rel = path.relative_to(ROOT)
        found += [f"{rel}:{hit}" for hit in unsafe_calls_in(path.read_text(encoding="utf-8"))]
    assert found == []


@pytest.fixture(scope="module")
def mlflow_has_allowed_hosts() -> bool:
    """Whether the installed ``mlflow server`` has ``--allowed-hosts``: read from the source
    of its command line (``mlflow server --help`` would take seconds to import MLflow)."""
    spec = importlib.util.find_spec("mlflow")  # finds the package without importing it
    assert spec is not None and spec.origin is not None, "MLflow is not installed"
    cli_source = Path(spec.origin).parent / "cli" / "__init__.py"
    assert cli_source.is_file(), cli_source
    return "--allowed-hosts" in cli_source.read_text(encoding="utf-8")


class _Spawned(Exception):
    """Raised instead of starting the MLflow server; carries its command line."""


def test_ui_server_gets_allowed_hosts(
    mlflow_has_allowed_hosts: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not mlflow_has_allowed_hosts:
        pytest.skip("the installed MLflow has no --allowed-hosts")
    db = tmp_path / "mlflow.db"
    db.touch()

    def spawn(command: list[str], env: dict[str, str], log: object) -> None:
        raise _Spawned(command)

    monkeypatch.setattr(ui, "_spawn", spawn)
    monkeypatch.setattr(ui.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(ui.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(_Spawned) as info:
        ui.start_ui(f"sqlite:///{db}")
    command = info.value.args[0]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    assert hosts
    for host in hosts:
        name, _, port = host.rpartition(":")
        assert name in ("127.0.0.1", "localhost", "[::1]") and port.isdigit(), host


def fake_tool(folder: Path, name: str) -> None:
    """An executable ``name`` that prints its arguments and the Ray auth mode it sees."""
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "{name} $* RAY_AUTH_MODE=${{RAY_AUTH_MODE:-}}"\n')
    path.chmod(0o755)


def run_deploy_script(
    script: str, env: dict[str, str], tools: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """:func:`run_script` with the fake tools in ``tools`` first on PATH (and as HOME)."""
    path = f"{tools}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    return run_script(script, {"PATH": path, "HOME": str(tools), **env}, *args)


def test_mlflow_server_script_passes_allowed_hosts(
    mlflow_has_allowed_hosts: bool, tmp_path: Path
) -> None:
    if not mlflow_has_allowed_hosts:
        pytest.skip("the installed MLflow has no --allowed-hosts")
    fake_tool(tmp_path, "mlflow")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    allowed = compose["services"]["mlflow"]["environment"]["MLFLOW_ALLOWED_HOSTS"]
    assert allowed.startswith("${MLFLOW_ALLOWED_HOSTS:-localhost"), "compose sets a default"
    env = {
        "POSTGRES_USER": "initstudy",
        "POSTGRES_PASSWORD": "test-only",
        "MLFLOW_ALLOWED_HOSTS": "localhost:*,mlflow:*",
    }
    proc = run_deploy_script("mlflow-server.sh", env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--allowed-hosts localhost:*,mlflow:*" in proc.stdout
    assert "--host 127.0.0.1" in proc.stdout  # loopback unless MLFLOW_HOST says otherwise
    assert "test-only" not in proc.stdout  # the password travels as PGPASSWORD, not argv


@pytest.mark.parametrize("script", ["ray-head.sh", "ray-worker.sh", "study.sh"])
def test_ray_scripts_run_ray_with_token_authentication(script: str, tmp_path: Path) -> None:
    fake_tool(tmp_path, "ray")
    env = {"RAY_AUTH_TOKEN": "test-only", "POSTGRES_USER": "initstudy"}
    args = ["tests/data/smoke_tiny.yaml"] if script == "study.sh" else []
    proc = run_deploy_script(script, env, tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "RAY_AUTH_MODE=token" in proc.stdout
    assert "test-only" not in proc.stdout  # the token is in the environment, not argv
    off = run_deploy_script(script, {**env, "RAY_AUTH_MODE": "disabled"}, tmp_path, *args)
    assert off.returncode == 2 and "token authentication only" in off.stderr


# ---------------------------------------------------------------- names from user input

HOSTILE = ["../../etc", "../x", "..", "...", "a/b", "a\\b", "/abs", "~root", "%2e%2e%2f", "x\0y"]


def assert_safe_name(name: str) -> None:
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name and ".." not in name and "\0" not in name
    base = Path("/runs/study")
    assert (base / name).resolve().parent == base


@pytest.mark.parametrize("hostile", HOSTILE)
def test_run_names_of_hostile_specs_stay_in_their_folder(hostile: str) -> None:
    spec = TrialSpec(init=hostile, init_recurrent=f"{hostile}/{hostile}")
    assert_safe_name(run_name(spec))


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=40), st.one_of(st.none(), st.text(max_size=20)))
def test_run_names_are_safe_for_any_scheme_names(init: str, recurrent: str | None) -> None:
    assert_safe_name(run_name(TrialSpec(init=init, init_recurrent=recurrent)))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="./\\-_aZ09 ~\0", max_size=8))
def test_valid_study_names_stay_under_the_reports_folder(name: str) -> None:
    """The default report folder is RUN_DIR/reports/STUDY, with STUDY a valid name."""
    if is_study_name(name):
        reports = Path("/runs/reports")
        assert (reports / name).resolve().parent == reports
    else:
        assert name in ("", ".", "..") or re.search(r"[/\\ ~\0]", name) or len(name) > 64


def invoke(argv: list[str]) -> int:
    with mock.patch.dict(os.environ), pytest.raises(SystemExit) as info:
        cli.main(argv)
    return int(info.value.code or 0)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_run_refuses_a_study_named_dot_dot_slash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    spec = work / "evil.yaml"
    spec.write_text(SMOKE.read_text().replace("name: smoke", "name: ../x"))
    monkeypatch.chdir(work)
    assert invoke(["run", str(spec)]) == 2
    assert "name" in capsys.readouterr().err
    assert invoke(["run", str(SMOKE), "--study-name", "../x"]) == 2
    assert "--study-name" in capsys.readouterr().err
    assert listing(tmp_path) == ["a", "a/b", "a/b/evil.yaml"]


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "../../x"],
        ["check", "../../x"],
        ["sync", "../../x"],
        ["results", "../../x", "--format", "csv", "--out", "r.csv"],
        ["query", "../../x", "SELECT 1"],
        ["report", "../../x"],
        ["ui", "../../x"],
        ["report", ".."],
    ],
    ids=lambda argv: argv[0] + " " + argv[1],
)
def test_commands_refuse_a_study_argument_that_is_a_path(
    argv: list[str],
    smoke_study: SmokeRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "a" / "b" / "runs"
    smoke_study.copy_to(run_dir)  # the session's smoke study (tests/conftest.py)
    before = listing(tmp_path)
    monkeypatch.chdir(run_dir.parent)
    assert invoke([*argv, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "STUDY" in err and "not a study name" in err
    assert listing(tmp_path) == before


def test_report_goes_where_out_points_and_by_default_under_the_run_dir(
    smoke_study: SmokeRun,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "runs"
    smoke_study.copy_to(run_dir)  # the session's smoke study (tests/conftest.py)
    out = tmp_path / "elsewhere" / "smoke-report"
    assert invoke(["report", "smoke", "--run-dir", str(run_dir), "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    # `run` left only its verdicts.json in the default folder; the report went to --out.
    assert sorted(p.name for p in (run_dir / "reports" / "smoke").iterdir()) == ["verdicts.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "runs"]
    capsys.readouterr()


_DASHBOARD_PROBE = """
import json, os, sys, urllib.error, urllib.request
from pathlib import Path
from typing import Any
from pipeline.execution import RayExecutor

executor = RayExecutor(num_cpus=1, dashboard_port=int(sys.argv[1]))
def status(headers):
    request = urllib.request.Request(executor.dashboard_url + "/api/version", headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=20).status
    except urllib.error.HTTPError as exc:
        return exc.code
token = os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").read_text()
print(json.dumps({
    "url": executor.dashboard_url,
    "mode": os.environ.get("RAY_AUTH_MODE"),
    "anonymous": status({}),
    "with_token": status({"Authorization": f"Bearer {token.strip()}"}),
}))
executor.shutdown()
"""


@pytest.mark.slow  # it starts Ray
def test_the_embedded_ray_dashboard_is_on_loopback_behind_the_token(tmp_path: Path) -> None:
    """``run --dashboard PORT``'s Ray: on 127.0.0.1, refusing a caller without Ray's token
    (the dashboard takes jobs, so it runs code)."""
    from ports import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    proc = subprocess.run(
        [sys.executable, "-c", _DASHBOARD_PROBE, str(port)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = yaml.safe_load(proc.stdout.strip().splitlines()[-1])
    assert seen["url"] == f"http://127.0.0.1:{port}" and seen["mode"] == "token"
    assert seen["anonymous"] == 401 and seen["with_token"] == 200


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--dashboard", "80"], {}, "--dashboard: a port from 1024 to 65535, got 80"),
        (
            ["--dashboard", "8265", "--address", "auto"],
            {},
            "--dashboard: only for the embedded Ray",
        ),
        (
            ["--dashboard", "8265"],
            {"RAY_AUTH_MODE": "disabled"},
            "--dashboard: the Ray dashboard runs jobs, so it starts only with Ray's token",
        ),
    ],
)
def test_run_refuses_a_dashboard_it_cannot_start_safely(
    args: list[str], env: dict[str, str], says: str, tmp_path: Path, cli_here: Any
) -> None:
    with mock.patch.dict(os.environ, env):
        done = cli_here("run", str(SMOKE), "--run-dir", str(tmp_path / "run"), *args)
    assert done.returncode == 2
    assert says in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- passwords in URLs


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u@db/x?password=hunter2", "postgresql://u@db/x?password=***"),
        (
            "postgresql://u:hunter2@db:5432/x?sslmode=require&sslpassword=hunter2",
            "postgresql://u:***@db:5432/x?sslmode=require&sslpassword=***",
        ),
        (
            "http://h:5000/?token=hunter2&api_key=hunter2#a",
            "http://h:5000/?token=***&api_key=***#a",
        ),
        ("mysql://u@h/x?passwd=hunter2;secret=hunter2", "mysql://u@h/x?passwd=***;secret=***"),
        ("sqlite:///runs/optuna.db?mode=ro", "sqlite:///runs/optuna.db?mode=ro"),
    ],
)
def test_redaction_hides_passwords_in_the_query_string(url: str, shown: str) -> None:
    from pipeline.urls import redact, redact_text

    assert redact(url) == shown
    assert redact_text(f"cannot open {url}: refused") == f"cannot open {shown}: refused"


@pytest.mark.parametrize("command", ["list", "run"])
def test_a_password_in_the_storage_urls_query_is_never_printed(
    command: str, tmp_path: Path, cli_here: Any
) -> None:
    url = "postgresql://u@127.0.0.1:1/db?password=hunter2&sslmode=disable"
    spec = [str(SMOKE)] if command == "run" else []
    done = cli_here(command, *spec, "--run-dir", str(tmp_path / "runs"), "--storage", url)
    assert done.returncode != 0 and done.stderr.startswith("error: ")
    assert "hunter2" not in done.stdout + done.stderr
    assert "password=***" in done.stderr, done.stderr
