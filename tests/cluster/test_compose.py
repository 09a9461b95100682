"""docker-compose.yml, read as data: the services and volumes are there, ports stay on
loopback unless the user opens them, no secret is written in the file, and each service
runs the deploy/ script that the process tests (test_cluster.py) run. No Docker engine is
needed; ``docker compose config`` is run too where Docker is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import DEPLOY, POSTGRES_INIT, ROOT, SERVICE_SCRIPTS

COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = DEPLOY / "docker-compose.gpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = {"postgres", "mlflow", "ray-head", "ray-worker", "study"}
LOOPBACK = ("127.0.0.1:", "${BIND_ADDRESS:-127.0.0.1}:")
REFERENCE = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?::?\?[^}]*)?\}")
"""A required variable reference, ``${VAR}`` or ``${VAR:?message}``: no default value."""
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def test_services_and_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= SERVICES
    volumes = set(compose["volumes"])
    assert {"pgdata", "mlartifacts"} <= volumes
    mounted = {
        str(v).split(":", 1)[0]
        for s in services.values()
        for v in s.get("volumes", [])
        if not str(v).startswith(".")
    }
    assert mounted == volumes, "every named volume is used, and every volume mount is named"
    assert "/var/lib/postgresql/data" in str(services["postgres"]["volumes"])
    assert "mlartifacts:/mlartifacts" in services["mlflow"]["volumes"]


def test_published_ports_bind_to_loopback(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") in ("127.0.0.1", "${BIND_ADDRESS:-127.0.0.1}"), name
            else:
                assert str(port).startswith(LOOPBACK), f"{name}: {port} is not bound to loopback"
    assert published >= 3  # PostgreSQL, MLflow and the Ray dashboard
    assert "BIND_ADDRESS=127.0.0.1" in ENV_EXAMPLE.read_text().splitlines()


def test_ray_workers_scale(compose: dict[str, Any]) -> None:
    worker = compose["services"]["ray-worker"]
    assert "ports" not in worker and "container_name" not in worker
    assert compose["services"]["study"]["profiles"] == ["study"]


def test_no_secret_values_in_the_file(compose: dict[str, Any]) -> None:
    secrets_seen = set()
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                match = REFERENCE.fullmatch(value)
                assert match, f"{name}: {key} must be a ${{VAR}} reference, got {value!r}"
                secrets_seen.add(match["name"])
    assert secrets_seen == {"POSTGRES_PASSWORD", "RAY_AUTH_TOKEN"}
    assert "change-me" not in repr(compose)
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for secret in secrets_seen:
        assert example.get(secret) == "change-me", f".env.example: {secret}=change-me"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()


def test_ray_token_authentication_everywhere(compose: dict[str, Any]) -> None:
    for name in ("ray-head", "ray-worker", "study"):
        env = environment(compose["services"][name])
        assert env["RAY_AUTH_MODE"] == "token", name
        assert REFERENCE.fullmatch(env["RAY_AUTH_TOKEN"]), name


def command_script(service: dict[str, Any]) -> str:
    """The deploy/ script a service runs (its entrypoint, else its command)."""
    argv = service.get("entrypoint") or service["command"]
    assert isinstance(argv, list), "exec form, so the script is PID 1's child under init"
    path = Path(argv[0])
    assert path.parent == Path("/app/deploy"), f"{argv[0]} is not a deploy/ script"
    return path.name


def test_services_run_the_scripts_the_process_tests_run(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, script in SERVICE_SCRIPTS.items():
        assert command_script(services[name]) == script
    for path in DEPLOY.glob("*.sh"):
        runnable = os.access(path, os.X_OK)
        assert runnable == (path.name != "lib.sh"), f"deploy/{path.name}: executable bit"
    init = f"./deploy/{POSTGRES_INIT}:/docker-entrypoint-initdb.d/"
    assert any(str(v).startswith(init) for v in services["postgres"]["volumes"])
    for name in ("mlflow", "ray-head"):
        test = services[name]["healthcheck"]["test"]
        assert test == ["CMD", "/app/deploy/healthcheck.sh", name]


def test_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "mlflow": {"postgres"},
        "ray-worker": {"ray-head"},
        "study": {"postgres", "mlflow", "ray-head"},
    }
    for name, needs in expected.items():
        depends = services[name]["depends_on"]
        assert set(depends) == needs, name
        assert all(d["condition"] == "service_healthy" for d in depends.values()), name
    for name in ("postgres", "mlflow", "ray-head"):
        assert services[name]["healthcheck"]["test"], name


def test_image_and_gpu_variant() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile.splitlines()
    assert "ARG TORCH_VERSION=2.13.0" in dockerfile
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    assert "COPY deploy/ deploy/" in dockerfile
    gpu = yaml.safe_load(GPU_OVERRIDE.read_text())
    devices = gpu["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def run_script(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a deploy/ script with only PATH, HOME and ``env`` in its environment."""
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [str(DEPLOY / script), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("script", ["ray-head.sh", "ray-worker.sh", "study.sh"])
@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "set RAY_AUTH_TOKEN"), ("change-me", "placeholder 'change-me'")],
)
def test_ray_scripts_refuse_to_run_without_a_real_token(
    script: str, token: str | None, message: str
) -> None:
    env = {"RAY_AUTH_TOKEN": token} if token else {}
    args = ["studies/smoke.yaml"] if script == "study.sh" else []
    result = run_script(script, env, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_ray_scripts_refuse_to_turn_authentication_off() -> None:
    result = run_script("ray-head.sh", {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "x"})
    assert result.returncode == 2
    assert "token authentication only" in result.stderr


def test_placeholder_database_password_is_refused() -> None:
    env = {"POSTGRES_USER": "initstudy", "POSTGRES_PASSWORD": "change-me"}
    for script in ("mlflow-server.sh", POSTGRES_INIT):
        result = run_script(script, env)
        assert result.returncode == 2, script
        assert "change-me" in result.stderr, script


def test_docker_compose_config() -> None:
    """``docker compose config`` accepts both files (where Docker is installed)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed here; the compose file was checked as YAML only")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed here")
    env = {**os.environ, "POSTGRES_PASSWORD": "test-only", "RAY_AUTH_TOKEN": "test-only"}
    for files in (["-f", str(COMPOSE)], ["-f", str(COMPOSE), "-f", str(GPU_OVERRIDE)]):
        result = subprocess.run(
            [docker, "compose", *files, "--profile", "study", "config", "--quiet"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
