"""compose/, checked without a Docker engine (none runs where CI does): docker-compose validates the compose
file with each profile, dockerfilelint the Dockerfiles; every Cartwise command in the compose file parses
with the real CLI, every CARTWISE_* variable it sets is a setting, every image is pinned, the GPU image's
pins derive from constraints.txt, the dashboard queries metrics the code defines, and the settings
reference in docs/deploy.md is the one the Settings classes generate. The probes behind `cartwise health`
run against a real gRPC health service and HTTP server on loopback.

`make test` installs docker-compose and dockerfilelint (Makefile); outside CI a missing tool skips its test."""

from __future__ import annotations

import http.server
import os
import re
import shlex
import shutil
import subprocess
import threading
from pathlib import Path

import click
import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cartwise.app import settings_reference
from cartwise.app.cli import main as cli
from cartwise.app.probes import ProbeFailed, _check_grpc, check_http
from cartwise.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
DOCKERFILES = (COMPOSE / "Dockerfile", COMPOSE / "Dockerfile.gpu")
DOCKERFILELINT = COMPOSE / "lint" / "node_modules" / ".bin" / "dockerfilelint"
PROFILES = ((), ("gpu",), ("cpu",), ("gpu", "cpu"))
# Read by cartwise/datasets.py, not a Settings field.
NON_SETTINGS_VARIABLES = {"CARTWISE_SHARED_DATA"}


def _tool(path: str | Path | None, what: str) -> str:
    if path and Path(path).exists():
        return str(path)
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: `make test` installs it")
    pytest.skip(f"{what} is not installed (`make test` installs it)")


def _compose(*args: str, profiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    # A clean environment: the defaults in the file are what is checked, not this shell's variables.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    command = [_tool(shutil.which("docker-compose"), "docker-compose"), "-f", str(COMPOSE_FILE)]
    command += [arg for p in profiles for arg in ("--profile", p)]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=COMPOSE, timeout=120)


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose file as docker-compose resolves it (interpolated, merged) with every profile enabled."""
    answer = _compose("config", profiles=("gpu", "cpu"))
    assert answer.returncode == 0, answer.stderr
    return yaml.safe_load(answer.stdout)


def _cartwise_services(resolved: dict) -> dict[str, dict]:
    return {name: s for name, s in resolved["services"].items() if s["image"].startswith("cartwise:")}


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "default")
def test_the_compose_file_is_valid_with_each_profile(profiles):
    answer = _compose("config", "-q", profiles=profiles)
    assert answer.returncode == 0, answer.stderr


def test_the_topology_has_every_part(resolved):
    services = resolved["services"]
    assert {"kafka", "qdrant", "init", "worker", "api", "trainer-gpu", "trainer-cpu", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["trainer-gpu"]["profiles"] == ["gpu"] and services["trainer-cpu"]["profiles"] == ["cpu"]
    devices = services["trainer-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in ("worker", "api"):
        assert services[name]["deploy"]["replicas"] >= 1
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    for name in ("kafka", "qdrant", "worker", "api", "trainer-gpu", "trainer-cpu"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    for name in ("kafka", "qdrant"):
        assert any(v.startswith(f"{name}:") for v in services[name]["volumes"]), f"{name} keeps its data in a volume"


def _parse_cli(args: list[str]) -> None:
    """Parse ``args`` as the `cartwise` command would, down to the leaf command, without running it.
    Raises click.UsageError (an unknown command, option or choice, a missing required option)."""
    ctx = cli.make_context("cartwise", list(args))
    command, rest = cli, ctx.protected_args + ctx.args
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        rest = ctx.protected_args + ctx.args if isinstance(command, click.Group) else ctx.args
    assert not rest, f"unexpected arguments {rest}"


def test_every_cartwise_command_in_the_compose_file_is_one_the_cli_accepts(resolved):
    checked = 0
    for name, service in _cartwise_services(resolved).items():
        _parse_cli(service["command"])  # the image's entry point runs `cartwise "$@"`
        probe = service.get("healthcheck", {}).get("test", [])
        if probe[1:2] == ["cartwise"]:
            _parse_cli(probe[2:])
        checked += 1
    assert checked >= 5


def test_the_cli_check_catches_a_wrong_command():
    with pytest.raises(click.UsageError):
        _parse_cli(["serve", "--role", "trainer"])
    with pytest.raises(click.UsageError):
        _parse_cli(["trainer", "run"])  # --every is required


def test_every_cartwise_variable_the_compose_file_sets_is_a_setting(resolved):
    known = settings_reference.env_names() | NON_SETTINGS_VARIABLES
    env_file = {line.split("=", 1)[0].lstrip("# ").strip() for line in (COMPOSE / "cartwise.env").read_text().splitlines()
                if re.match(r"#?\s*CARTWISE_\w+=", line)}
    for name, service in _cartwise_services(resolved).items():
        variables = {k for k in service.get("environment", {}) if k.startswith("CARTWISE_")}
        variables |= {s["target"] for s in service.get("secrets", []) if s["target"].startswith("CARTWISE_")}
        assert not variables - known, f"{name}: not settings: {sorted(variables - known)}"
    assert env_file and not env_file - known, f"cartwise.env: not settings: {sorted(env_file - known)}"


def test_secrets_are_files_never_values_in_the_compose_file(resolved):
    secret_names = {n for n in settings_reference.env_names() if n.endswith(("_TOKENS", "_TOKEN", "_API_KEY", "_PASSWORD"))}
    for name, service in resolved["services"].items():
        assert not secret_names & set(service.get("environment", {})), f"{name} sets a secret inline"
    assert all(set(s) == {"file"} for s in resolved["secrets"].values())


def test_every_image_is_pinned(resolved):
    for name, service in resolved["services"].items():
        image, _, tag = service["image"].rpartition(":")
        assert image and tag and tag != "latest" and "$" not in tag, f"{name}: {service['image']}"
    for dockerfile in DOCKERFILES:
        for base in re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE):
            assert ":" in base and not base.endswith(":latest"), f"{dockerfile.name}: FROM {base}"


def test_the_dockerfiles_pass_dockerfilelint():
    lint = _tool(DOCKERFILELINT, "dockerfilelint")
    answer = subprocess.run([lint, *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_the_dockerfiles_install_the_tested_pins():
    constraints = (ROOT / "constraints.txt").read_text()
    torch = re.search(r"^torch==(\S+)$", constraints, re.MULTILINE)
    assert torch and torch.group(1).endswith("+cpu"), "constraints.txt pins torch exactly, to the CPU build"
    cpu = (COMPOSE / "Dockerfile").read_text()
    assert re.search(r'pip install .*-c constraints\.txt "\.\[cpu\]"', cpu)


def test_the_gpu_image_pins_derive_from_constraints(tmp_path):
    dockerfile = (COMPOSE / "Dockerfile.gpu").read_text()
    assert re.search(r'pip install -c constraints-gpu\.txt "\.\[gpu\]"', dockerfile)
    sed = re.search(r"(sed .*?constraints\.txt) > constraints-gpu\.txt", dockerfile).group(1)
    shutil.copy(ROOT / "constraints.txt", tmp_path)
    derived = subprocess.run(shlex.split(sed), capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    version = re.search(r"^torch==(\S+)\+cpu$", (ROOT / "constraints.txt").read_text(), re.MULTILINE).group(1)
    assert f"torch=={version}\n" in derived and "+cpu" not in derived
    assert re.search(r"^onnxruntime-gpu==\S+$", derived, re.MULTILINE) and not re.search(r"^onnxruntime==", derived, re.MULTILINE)


def _metric_names_in_code() -> str:
    sources = [p for package in ("cartwise", "encoders", "streams", "grpc_api", "trainer")
               for p in (ROOT / package).rglob("*.py")]
    return "\n".join(p.read_text(encoding="utf-8") for p in sources)


def test_the_dashboard_queries_metrics_the_code_defines():
    dashboard = (COMPOSE / "grafana" / "dashboards" / "cartwise.json").read_text()
    used = set(re.findall(r"\b(cartwise_[a-z0-9_]+)", dashboard)) - {"cartwise_"}
    assert used
    code = _metric_names_in_code()
    if "prometheus_client" not in code:
        pytest.skip("no process exports metrics yet (issue 14, metrics)")
    suffixes = ("_bucket", "_count", "_sum", "_total", "_info")
    missing = {m for m in used if not any(f'"{c}"' in code for c in {m, *(m.removesuffix(s) for s in suffixes)})}
    assert not missing, f"compose/grafana/dashboards/cartwise.json queries metrics no code defines: {sorted(missing)}"


def test_the_settings_reference_in_docs_deploy_is_current():
    document = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    expected = settings_reference.replace_section(document, settings_reference.render())
    assert document == expected, "docs/deploy.md's settings section is stale: run " \
                                 "`.venv/bin/cartwise settings-reference --write docs/deploy.md`"


def test_the_settings_reference_hides_secrets_and_needs_its_markers():
    reference = settings_reference.render()
    assert "| `CARTWISE_API_TOKENS` |" in reference and "`CARTWISE_PERSONALIZATION_ALPHA_MAX`" in reference
    for line in reference.splitlines():
        if line.startswith(("| `CARTWISE_API_TOKEN", "| `CARTWISE_QDRANT_API_KEY`")):
            assert "unset (secret)" in line
    with pytest.raises(ValueError):
        settings_reference.replace_section("no markers here", reference)
    stale = f"a\n{settings_reference.BEGIN}\nold\n{settings_reference.END}\nb\n"
    assert settings_reference.replace_section(stale, "new") == f"a\n{settings_reference.BEGIN}\nnew\n{settings_reference.END}\nb\n"


async def test_the_grpc_probe_follows_the_health_service():
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target, settings = f"127.0.0.1:{port}", Settings(_env_file=None)
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await _check_grpc(settings, target, "", 3.0)
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        with pytest.raises(ProbeFailed, match="NOT_SERVING"):
            await _check_grpc(settings, target, "", 3.0)
        with pytest.raises(ProbeFailed, match="NOT_FOUND"):
            await _check_grpc(settings, target, "no.such.Service", 3.0)
    finally:
        await server.stop(None)
    with pytest.raises(ProbeFailed, match="UNAVAILABLE"):
        await _check_grpc(settings, target, "", 1.0)


def test_the_http_probe_wants_a_2xx_answer():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            self.send_response(200 if self.path == "/metrics" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        check_http(f"{base}/metrics")
        with pytest.raises(ProbeFailed, match="HTTP 503"):
            check_http(f"{base}/other")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ProbeFailed):
        check_http(f"{base}/metrics", timeout_s=1.0)
