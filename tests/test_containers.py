"""Container artefacts: Dockerfile, .dockerignore, docker-compose.yml and deploy/nginx.conf.

No Docker engine is available here (no ``docker build``, no ``docker compose``), so the files are
checked statically and the parts that can run without Docker are run:

* ``hadolint --failure-threshold warning`` on the Dockerfile (plus negative controls),
* ``check-jsonschema --builtin-schema vendor.compose-spec`` on the compose file (plus negative
  controls), and ``docker stack config`` (the Docker CLI's Swarm stack loader; it needs only the
  client) so the same file also loads for ``docker stack deploy``,
* structural facts parsed from the files (base image, non-root user, health checks, ports,
  replicas, resources, every ``SERVICE_*`` setting configurable),
* ``nginx -t`` on deploy/nginx.conf (Debian's ``nginx`` package; plus negative controls),
* the Dockerfile's build-context files installed non-editable into a new venv, then
  ``python -m service`` started on loopback and ``/healthz`` polled until it answers 200,
* two ``python -m service`` processes behind a real nginx running deploy/nginx.conf: requests go
  through the balancer and both replicas must serve some.

deploy/nginx.conf is rendered for the tests by :func:`render_nginx_conf`, which makes only the
edits listed there (listen port, temp directories, and for the end-to-end test the upstream).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
DOCKERIGNORE = REPO / ".dockerignore"
NGINX_CONF = REPO / "deploy" / "nginx.conf"

BASE_IMAGE = "python:3.11-slim"
COMPOSE_SCHEMA = "vendor.compose-spec"
# Debian packages for the nginx tests: `apt-get install -y --no-install-recommends nginx`.
NGINX_APT_PACKAGES = "nginx"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


SYSTEM_TOOLS = frozenset({"docker", "nginx", "chromium", "chromedriver"})


def _tool(name: str) -> str:
    """Path of a dev-dependency executable: next to the interpreter first, then on PATH.

    These tools are in the ``dev`` extra, so a missing one is a broken environment: fail loudly
    instead of skipping (a skipped lint is a lint that silently stopped running).
    """
    bindir = Path(sys.executable).parent
    for candidate in (bindir / name, bindir / f"{name}.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        # The Docker CLI is a Debian package (docker.io / docker-cli), the others are Python ones.
        fix = (
            "it is a Debian package: run `bash scripts/system-deps.sh` (needs root or sudo)"
            if name in SYSTEM_TOOLS
            else "it is a dev dependency: run `pip install -e '.[dev]'`"
        )
        pytest.fail(
            f"`{name}` executable not found next to {sys.executable} or on PATH; {fix} "
            "(`bash scripts/test.sh` does both).",
            pytrace=False,
        )
    return found


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def _hadolint(path: Path) -> tuple[int, list[dict[str, Any]], str]:
    """Run hadolint with the CI threshold; return (rc, findings, raw output)."""
    proc = _run(
        [_tool("hadolint"), "--failure-threshold", "warning", "--format", "json", str(path)]
    )
    raw = proc.stdout + proc.stderr
    try:
        findings = json.loads(proc.stdout) if proc.stdout.strip() else []
    except json.JSONDecodeError:
        pytest.fail(f"hadolint did not produce JSON (rc={proc.returncode}):\n{raw}")
    return proc.returncode, findings, raw


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return _run([_tool("check-jsonschema"), "--builtin-schema", COMPOSE_SCHEMA, str(path)])


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations and drop comments/blank lines (default escape char only)."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):  # comment lines inside a continuation are dropped
            continue
        if not buf:
            start = lineno
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        out.append((start, " ".join(p for p in buf if p)))
        buf = []
    if buf:
        out.append((start, " ".join(p for p in buf if p)))
    return out


def _substitute(value: str, args: dict[str, str]) -> str:
    for key, val in args.items():
        value = value.replace("${" + key + "}", val).replace("$" + key, val)
    return value


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages; FROM images have global ARG defaults substituted."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for lineno, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = _substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=image, name=name))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            global_args[key.strip()] = default.strip()
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, rest, lineno))
    return stages


def _env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr in stage.all("ENV"):
        for token in shlex.split(instr.args):
            key, sep, value = token.partition("=")
            if sep:
                env[key] = value
    return env


def _exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list), f"not exec (JSON array) form: {args!r}"
    return [str(a) for a in parsed]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    assert DOCKERFILE.is_file(), f"missing {DOCKERFILE}"
    parsed = parse_dockerfile(DOCKERFILE.read_text())
    assert parsed, "Dockerfile has no FROM"
    return parsed


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE.is_file(), f"missing {COMPOSE}"
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------------------------
# (a) + (c) hadolint
# --------------------------------------------------------------------------------------------


def test_hadolint_passes_on_dockerfile() -> None:
    rc, findings, raw = _hadolint(DOCKERFILE)
    blocking = [f for f in findings if f.get("level") in {"error", "warning"}]
    assert rc == 0 and not blocking, f"hadolint rejected the Dockerfile (rc={rc}):\n{raw}"


BAD_DOCKERFILES = {
    "unpinned_pip_and_latest": (
        "FROM python:latest\nRUN pip install requests\nCMD python app.py\n",
        {"DL3007", "DL3013", "DL3042"},
    ),
    "cd_and_unpinned_apt": (
        "FROM python:3.11-slim\nRUN cd /tmp && apt-get install curl\n",
        {"DL3003", "DL3008"},
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_DOCKERFILES))
def test_hadolint_rejects_bad_dockerfile(tmp_path: Path, name: str) -> None:
    text, expected = BAD_DOCKERFILES[name]
    bad = tmp_path / "Dockerfile"
    bad.write_text(text)
    rc, findings, raw = _hadolint(bad)
    codes = {f.get("code") for f in findings}
    assert rc != 0, f"hadolint accepted a deliberately bad Dockerfile:\n{text}\n{raw}"
    assert expected <= codes, f"expected rules {sorted(expected)}, got {sorted(codes)}:\n{raw}"


def test_hadolint_rejects_degraded_real_dockerfile(tmp_path: Path) -> None:
    """The real file with its final base switched to ``:latest`` must fail the same gate."""
    text = DOCKERFILE.read_text()
    lines = text.splitlines()
    from_idx = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert from_idx, "Dockerfile has no FROM"
    lines[from_idx[-1]] = "FROM python:latest AS runtime"
    bad = tmp_path / "Dockerfile"
    bad.write_text("\n".join(lines) + "\n")
    rc, findings, raw = _hadolint(bad)
    assert rc != 0 and "DL3007" in {f.get("code") for f in findings}, raw


# --------------------------------------------------------------------------------------------
# (b) + (c) compose-spec validation
# --------------------------------------------------------------------------------------------


def test_compose_validates_against_compose_spec() -> None:
    proc = _check_compose(COMPOSE)
    assert proc.returncode == 0, (
        f"{COMPOSE.name} fails the compose-spec schema:\n{proc.stdout}{proc.stderr}"
    )


def _ports_as_string(doc: dict[str, Any]) -> str:
    doc["services"]["lb"]["ports"] = "8000:80"
    return "$.services.lb.ports"


def _memory_as_list(doc: dict[str, Any]) -> str:
    doc["services"]["api"]["deploy"]["resources"]["limits"]["memory"] = ["2g"]
    return "$.services.api.deploy.resources.limits.memory"


def _unknown_healthcheck_key(doc: dict[str, Any]) -> str:
    doc["services"]["api"]["healthcheck"]["url"] = "http://127.0.0.1:8000/healthz"
    return "$.services.api.healthcheck"


def _services_as_list(doc: dict[str, Any]) -> str:
    doc["services"] = [doc["services"]["api"]]
    return "$.services"


COMPOSE_MUTATIONS = {
    "ports_as_string": _ports_as_string,
    "memory_as_list": _memory_as_list,
    "unknown_healthcheck_key": _unknown_healthcheck_key,
    "services_as_list": _services_as_list,
}


@pytest.mark.parametrize("name", sorted(COMPOSE_MUTATIONS))
def test_compose_schema_rejects_bad_file(
    tmp_path: Path, compose: dict[str, Any], name: str
) -> None:
    doc = copy.deepcopy(compose)
    where = COMPOSE_MUTATIONS[name](doc)
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = _check_compose(bad)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, (
        f"check-jsonschema accepted a bad compose file (rc={proc.returncode}):\n{out}"
    )
    assert where in out, f"error not located at {where}:\n{out}"


def test_compose_mutation_harness_round_trips(tmp_path: Path, compose: dict[str, Any]) -> None:
    """Re-serialised but unmodified, the compose file still validates (controls are fair)."""
    ok = tmp_path / "docker-compose.yml"
    ok.write_text(yaml.safe_dump(copy.deepcopy(compose), sort_keys=False))
    proc = _check_compose(ok)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# `docker stack deploy` does not use the compose-spec schema: the Docker CLI loads the file with
# its own Swarm loader (compose file format 3.x), which rejects some keys that `docker compose`
# accepts (a top-level `name:`, the long `depends_on` form with `condition:`). `docker stack
# config` runs that loader and interpolation client-side, no daemon needed.

_INTERPOLATED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _stack_config(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``docker stack config -c path`` with the compose variables unset except ``env``."""
    names = set(_INTERPOLATED.findall(path.read_text()))
    clean = {k: v for k, v in os.environ.items() if k not in names}
    clean.update(env)
    return _run([_tool("docker"), "stack", "config", "-c", str(path)], env=clean)


def test_compose_loads_as_swarm_stack() -> None:
    proc = _stack_config(COMPOSE)
    assert proc.returncode == 0, (
        f"`docker stack config` (the loader `docker stack deploy` uses) rejects {COMPOSE.name}:\n"
        f"{proc.stdout}{proc.stderr}"
    )
    stack = yaml.safe_load(proc.stdout)
    api, lb = stack["services"]["api"], stack["services"]["lb"]
    assert api["deploy"]["replicas"] == 3
    assert api["deploy"]["endpoint_mode"] == "dnsrr"
    assert "ports" not in api
    assert [(p["published"], p["target"]) for p in lb["ports"]] == [(8000, 80)]
    assert Path(stack["configs"]["nginx_conf"]["file"]).resolve() == NGINX_CONF


def test_compose_replicas_and_port_come_from_env() -> None:
    proc = _stack_config(COMPOSE, API_REPLICAS="5", LB_PORT="9090", SERVICE_WORKERS="3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stack = yaml.safe_load(proc.stdout)
    api, lb = stack["services"]["api"], stack["services"]["lb"]
    assert api["deploy"]["replicas"] == 5
    assert api["environment"]["SERVICE_WORKERS"] == "3"
    assert [(p["published"], p["target"]) for p in lb["ports"]] == [(9090, 80)]


def _top_level_name(doc: dict[str, Any]) -> str:
    doc["name"] = "jacobian-service"
    return "Additional property name is not allowed"


def _depends_on_condition(doc: dict[str, Any]) -> str:
    doc["services"]["lb"]["depends_on"] = {"api": {"condition": "service_healthy"}}
    return "depends_on must be a list"


SWARM_MUTATIONS = {
    "top_level_name": _top_level_name,
    "depends_on_condition": _depends_on_condition,
}


@pytest.mark.parametrize("name", sorted(SWARM_MUTATIONS))
def test_swarm_loader_rejects_compose_only_syntax(
    tmp_path: Path, compose: dict[str, Any], name: str
) -> None:
    """Both are valid compose-spec (so check-jsonschema alone would not catch them)."""
    doc = copy.deepcopy(compose)
    expected = SWARM_MUTATIONS[name](doc)
    shutil.copytree(NGINX_CONF.parent, tmp_path / "deploy")  # the configs: file must exist
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert _check_compose(bad).returncode == 0, "control should be valid compose-spec"
    proc = _stack_config(bad)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"`docker stack config` accepted {name}:\n{out}"
    assert expected in out, out


# --------------------------------------------------------------------------------------------
# (d) structural facts
# --------------------------------------------------------------------------------------------


def test_dockerfile_parser_sanity() -> None:
    parsed = parse_dockerfile(
        "ARG IMG=python:3.11-slim\nFROM ${IMG} AS b\nRUN a \\\n  # note\n  && b\n"
        "FROM $IMG\nUSER 1000\n"
    )
    assert [(s.image, s.name) for s in parsed] == [(BASE_IMAGE, "b"), (BASE_IMAGE, None)]
    assert parsed[0].all("RUN")[0].args == "a && b"
    assert parsed[1].all("USER")[0].args == "1000"


def test_dockerfile_is_multistage_on_python_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    for stage in stages:
        assert stage.image == BASE_IMAGE, f"stage {stage.name!r} is based on {stage.image!r}"
    runtime = stages[-1]
    copies_from_builder = [
        c for c in runtime.all("COPY") if c.args.startswith("--from=") and "/opt/venv" in c.args
    ]
    assert copies_from_builder, "runtime stage must COPY the venv from the builder"


def test_dockerfile_dependency_layer_precedes_code_layer(stages: list[Stage]) -> None:
    builder = stages[0]
    keywords = [(i.keyword, i.args) for i in builder.instructions]
    pyproject_copy = next(
        n for n, (k, a) in enumerate(keywords) if k == "COPY" and "pyproject.toml" in a
    )
    code_copy = next(
        n for n, (k, a) in enumerate(keywords) if k == "COPY" and a.split()[0] == "service"
    )
    dep_install = next(n for n, (k, a) in enumerate(keywords) if k == "RUN" and "pip install" in a)
    assert pyproject_copy < dep_install < code_copy, keywords
    assert "service" not in keywords[pyproject_copy][1].split()[:-1], "code copied too early"


def test_dockerfile_runs_as_non_root(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "runtime stage has no USER instruction (would run as root)"
    user = users[-1].args.split(":")[0].strip()
    assert user not in {"root", "0", ""}, f"final USER is {users[-1].args!r}"
    # Nothing after USER switches back to root.
    last_user_line = users[-1].line
    assert all(i.keyword != "USER" for i in stages[-1].instructions if i.line > last_user_line)


def test_dockerfile_runtime_settings(stages: list[Stage]) -> None:
    runtime = stages[-1]
    env = _env_of(runtime)
    assert env.get("SERVICE_HOST") == "0.0.0.0"
    assert env.get("SERVICE_PORT") == "8000"
    assert env.get("SERVICE_WORKERS") == "1"  # scale by replicas (service/api/observability.py)
    assert any("8000" in e.args.split() for e in runtime.all("EXPOSE")), "EXPOSE 8000 missing"
    cmds = runtime.all("CMD")
    assert cmds and _exec_form(cmds[-1].args) == ["python", "-m", "service"]


def test_dockerfile_healthcheck_targets_healthz(stages: list[Stage]) -> None:
    checks = stages[-1].all("HEALTHCHECK")
    assert checks, "runtime stage has no HEALTHCHECK"
    args = checks[-1].args
    assert " CMD " in f" {args} ", f"HEALTHCHECK without CMD: {args!r}"
    probe = _exec_form(args.split(" CMD ", 1)[1] if " CMD " in args else args[4:])
    joined = " ".join(probe)
    assert probe[0] == "python" and "urllib" in joined, f"probe should use urllib: {probe}"
    assert "/healthz" in joined
    assert "curl" not in joined and "wget" not in joined, "python:3.11-slim has no curl/wget"


def test_dockerfile_probe_is_valid_python(stages: list[Stage]) -> None:
    args = stages[-1].all("HEALTHCHECK")[-1].args
    probe = _exec_form(args.split(" CMD ", 1)[1])
    code = probe[probe.index("-c") + 1]
    compile(code, "<HEALTHCHECK>", "exec")


def test_compose_healthcheck_probes_the_api(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    test = api["healthcheck"]["test"]
    argv = test if isinstance(test, list) else ["CMD-SHELL", test]
    assert argv[0] in {"CMD", "CMD-SHELL"}
    joined = " ".join(str(a) for a in argv[1:])
    assert re.search(r"127\.0\.0\.1:8000/(healthz|readyz)\b", joined), joined
    assert "urllib" in joined, joined
    assert "curl" not in joined and "wget" not in joined, "python:3.11-slim has no curl/wget"
    if argv[0] == "CMD":
        compile(str(argv[argv.index("-c") + 1]), "<compose healthcheck>", "exec")


def test_compose_lb_healthcheck_uses_nginx_health(compose: dict[str, Any]) -> None:
    test = compose["services"]["lb"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "wget", test  # busybox wget is in nginx:*-alpine
    assert test[-1] == "http://127.0.0.1/nginx-health", test
    assert "location = /nginx-health" in NGINX_CONF.read_text()


def _env_dict(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_api_build_and_image(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    build = api["build"]
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    context = build.get("context", ".") if isinstance(build, dict) else build
    assert (REPO / context / dockerfile).resolve() == DOCKERFILE
    # Swarm ignores build: and pulls `image`, so it must be overridable with a registry path.
    assert re.fullmatch(r"\$\{API_IMAGE:-jacobian-service:[\w.-]+\}", api["image"]), api["image"]


def test_compose_only_the_balancer_publishes_a_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"api", "lb"}, sorted(services)
    assert "ports" not in services["api"], "clients must go through lb, not straight to api"
    ports = [str(p) for p in services["lb"]["ports"]]
    assert ports == ["${LB_PORT:-8000}:80"], ports
    assert re.search(r"^\s*listen\s+80;", NGINX_CONF.read_text(), re.M), "nginx must listen on 80"


def test_compose_lb_mounts_nginx_conf_as_config(compose: dict[str, Any]) -> None:
    lb = compose["services"]["lb"]
    assert re.fullmatch(r"nginx:\d+\.\d+-alpine", lb["image"]), f"pin nginx: {lb['image']}"
    (mount,) = lb["configs"]
    assert mount["target"] == "/etc/nginx/nginx.conf"
    config = compose["configs"][mount["source"]]
    assert (REPO / config["file"]).resolve() == NGINX_CONF
    assert "volumes" not in lb, "use the configs: entry (works on Swarm), not a bind mount"
    assert lb.get("depends_on") == ["api"], "short form only: Swarm's loader rejects conditions"


@pytest.mark.parametrize("name", ["api", "lb"])
def test_compose_deploy_section(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    deploy = service["deploy"]
    assert deploy["mode"] == "replicated"
    resources = deploy["resources"]
    for kind in ("limits", "reservations"):
        assert {"cpus", "memory"} <= set(resources[kind]), f"{name}: {kind} incomplete"
    assert deploy["restart_policy"]["condition"] in {"any", "on-failure"}
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["update_config"]["order"] == "start-first"  # no capacity dip while updating
    assert service.get("restart") in {"always", "unless-stopped", "on-failure"}  # compose
    assert "healthcheck" in service


def test_compose_api_replicas(compose: dict[str, Any]) -> None:
    deploy = compose["services"]["api"]["deploy"]
    match = re.fullmatch(r"\$\{API_REPLICAS:-(\d+)\}", str(deploy["replicas"]))
    assert match and int(match.group(1)) >= 2, deploy["replicas"]
    assert deploy["endpoint_mode"] == "dnsrr", "nginx must see every task (see the comment)"


_DEFAULT = re.compile(r"\$\{(?P<var>[A-Z_][A-Z0-9_]*):-(?P<default>[^}]*)\}")


def test_compose_configures_every_setting(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every field of service.config.Settings is in the api environment, with the app's default.

    A new setting added to service/config.py fails here until docker-compose.yml passes it on.
    """
    from service.config import Settings

    for key in list(os.environ):
        if key.startswith("SERVICE_"):
            monkeypatch.delenv(key)
    env = _env_dict(compose["services"]["api"])
    app_defaults = Settings()
    fixed = {"host": "0.0.0.0"}  # deliberately not the app's loopback default
    for name in Settings.model_fields:
        key = f"SERVICE_{name.upper()}"
        assert key in env, f"{key} ({name} in service/config.py) is not set in docker-compose.yml"
        raw = env[key]
        if name in fixed:
            assert raw == fixed[name], f"{key}={raw!r}"
            continue
        match = _DEFAULT.fullmatch(raw)
        if match is None:  # a fixed value (SERVICE_PORT): it must still equal the app default
            value = raw
        else:
            assert match["var"] == key, f"{key} interpolates {match['var']}"
            value = match["default"]
        got = getattr(Settings.model_validate({name: value}), name)
        assert got == getattr(app_defaults, name), (
            f"{key} defaults to {value!r} in docker-compose.yml, but the app's default is "
            f"{getattr(app_defaults, name)!r}"
        )


def test_service_workers_env_drives_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m service`` (the image's CMD) passes SERVICE_WORKERS etc. to uvicorn."""
    import uvicorn

    import service.__main__ as entry
    from service.config import get_settings

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setenv("SERVICE_WORKERS", "3")
    monkeypatch.setenv("SERVICE_HOST", "0.0.0.0")
    monkeypatch.setenv("SERVICE_PORT", "8123")
    get_settings.cache_clear()
    try:
        entry.main()
    finally:
        get_settings.cache_clear()
    assert (seen["workers"], seen["host"], seen["port"]) == (3, "0.0.0.0", 8123), seen


def test_dockerignore_excludes_local_state() -> None:
    assert DOCKERIGNORE.is_file()
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    for required in (".venv", ".git", ".pytest_cache", ".mypy_cache", ".hypothesis"):
        assert required in patterns, f"{required} not in .dockerignore"
    for needed in ("pyproject.toml", "service", "README.md"):
        assert needed not in patterns, f"{needed} is needed by the build but ignored"


# --------------------------------------------------------------------------------------------
# (e) install the way the Dockerfile does, then serve /healthz
# --------------------------------------------------------------------------------------------


def _build_context_sources(stages: list[Stage]) -> list[str]:
    """Paths the builder stage COPYs from the build context (not ``--from=`` another stage)."""
    sources: list[str] = []
    for instr in stages[0].all("COPY"):
        words = [w for w in instr.args.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in instr.args.split()):
            continue
        sources.extend(words[:-1])
    return sources


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no output>"


@pytest.mark.slow
def test_package_installs_and_serves_healthz_like_the_image(
    tmp_path: Path, stages: list[Stage]
) -> None:
    # 1. Build context: exactly what the builder stage COPYs, so a file the image would be
    #    missing (README.md, a data file, ...) breaks this test too.
    context = tmp_path / "context"
    context.mkdir()
    sources = _build_context_sources(stages)
    assert "pyproject.toml" in sources and "service" in sources, sources
    for src in sources:
        origin = REPO / src
        assert origin.exists(), f"Dockerfile COPYs {src!r}, which does not exist in the repo"
        if origin.is_dir():
            shutil.copytree(
                origin, context / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(origin, context / src)

    # 2. Fresh venv + non-editable install, as in the Dockerfile.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = _venv_python(venv)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", str(context)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"

    # The package must come from site-packages, not from a source tree on sys.path.
    where = subprocess.run(
        [str(py), "-c", "import service; print(service.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where

    # 3. Start it with the image's settings, but on a free loopback port.
    port = _free_port()
    image_env = _env_of(stages[-1])
    env.update(
        {
            "SERVICE_HOST": "127.0.0.1",
            "SERVICE_PORT": str(port),
            "SERVICE_WORKERS": image_env.get("SERVICE_WORKERS", "1"),
            "SERVICE_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}/healthz"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(py), "-m", "service"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers are cleaned up with it
        )
        try:
            deadline = time.monotonic() + 60
            last_error = "no attempt"
            status: int | None = None
            body = b""
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    pytest.fail(
                        f"`python -m service` exited with {proc.returncode} before /healthz "
                        f"answered:\n{_tail(log)}"
                    )
                try:
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        status, body = resp.status, resp.read()
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                    last_error = repr(exc)
                    time.sleep(0.25)
            assert status == 200, (
                f"GET {url} not 200 within 60 s (last: {last_error}):\n{_tail(log)}"
            )
            json.loads(body)  # liveness answers JSON
        finally:
            if proc.poll() is None:
                proc.terminate()  # SIGTERM to our own PID: uvicorn shuts its workers down
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if os.name != "nt":
                try:  # any straggling worker in the group this test created (pgid == proc.pid)
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


# --------------------------------------------------------------------------------------------
# (f) deploy/nginx.conf: `nginx -t`, negative controls, and a real run in front of two replicas
# --------------------------------------------------------------------------------------------

_UPSTREAM_BLOCK = re.compile(
    r"^[ \t]*# >>> api-upstream\b.*?^[ \t]*# <<< api-upstream <<<[ \t]*\n", re.M | re.S
)
_LISTEN_LINE = re.compile(r"^([ \t]*)listen 80;[^\n]*# @listen\b[^\n]*$", re.M)
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def _nginx() -> str:
    """The nginx executable; missing is a broken environment (CI installs it), never a skip."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail(
            "`nginx` not found on PATH or in /usr/sbin. The nginx tests need Debian's nginx: "
            f"`apt-get update && apt-get install -y --no-install-recommends {NGINX_APT_PACKAGES}` "
            "(.ci/run installs it in CI).",
            pytrace=False,
        )
    return found


def render_nginx_conf(
    text: str, workdir: Path, listen_port: int, upstreams: list[str] | None = None
) -> str:
    """Make deploy/nginx.conf runnable by an unprivileged test, with as few edits as possible.

    1. The line marked ``# @listen`` listens on ``127.0.0.1:listen_port`` instead of port 80
       (non-root cannot bind 80, and `nginx -t` binds the listen sockets).
    2. nginx's temp directories move under ``workdir`` (Debian's compiled-in /var/lib/nginx
       is root's), added as the first lines of the ``http`` block.
    3. Only if ``upstreams`` is given: the lines between ``# >>> api-upstream`` and
       ``# <<< api-upstream <<<`` (Docker DNS resolver + ``api:8000``) become an upstream group
       of those ``host:port`` addresses, under the same ``$api_upstream`` variable.

    Everything else (locations, timeouts, headers, buffering, logging) runs as written.
    """
    text, n = _LISTEN_LINE.subn(rf"\g<1>listen 127.0.0.1:{listen_port};", text)
    assert n == 1, "deploy/nginx.conf must have exactly one `listen 80;  # @listen` line"
    temp = "".join(f"    {kind}_temp_path {workdir / ('temp_' + kind)};\n" for kind in _TEMP_PATHS)
    text, n = re.subn(r"^http \{\n", lambda m: m.group(0) + temp, text, flags=re.M)
    assert n == 1, "deploy/nginx.conf must have one top-level `http {` line"
    if upstreams is not None:
        servers = "".join(f"        server {address};\n" for address in upstreams)
        block = (
            "    upstream e2e_api {\n        zone e2e_api 64k;\n" + servers + "    }\n"
            "    map $host $api_upstream {\n        default e2e_api;\n    }\n"
        )
        text, n = _UPSTREAM_BLOCK.subn(lambda m: block, text)
        assert n == 1, "deploy/nginx.conf must have one `# >>> api-upstream` ... `<<<` block"
    return text


def _nginx_cmd(workdir: Path, conf: Path, *extra: str, daemon: bool = False) -> list[str]:
    """nginx with every path under ``workdir``: prefix, pid file, start-up error log."""
    globals_ = f"pid {workdir / 'nginx.pid'};"
    if not daemon:
        globals_ += " daemon off;"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # As root, workers would switch to the compiled-in user (nobody), which cannot enter
        # pytest's 0700 tmp directories; keep them as the current user.
        import pwd

        globals_ += f" user {pwd.getpwuid(os.geteuid()).pw_name};"
    return [
        _nginx(),
        *extra,
        "-p",
        f"{workdir}/",
        "-c",
        str(conf),
        "-e",
        str(workdir / "startup-error.log"),
        "-g",
        globals_,
    ]


def _nginx_test(workdir: Path, text: str) -> subprocess.CompletedProcess[str]:
    conf = workdir / "nginx.conf"
    conf.write_text(text)
    return _run(_nginx_cmd(workdir, conf, "-t"))


def test_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    text = render_nginx_conf(NGINX_CONF.read_text(), tmp_path, _free_port())
    proc = _nginx_test(tmp_path, text)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "test is successful" in out, (
        f"nginx -t rejects deploy/nginx.conf (rc={proc.returncode}):\n{out}"
    )


def test_nginx_render_edits_only_the_marked_lines(tmp_path: Path) -> None:
    original = NGINX_CONF.read_text()
    rendered = render_nginx_conf(original, tmp_path, 12345, ["127.0.0.1:1", "127.0.0.1:2"])
    removed = set(original.splitlines()) - set(rendered.splitlines())
    assert any("listen 80;" in line for line in removed)
    assert any("resolver 127.0.0.11" in line for line in removed)
    unmarked = [line for line in removed if "listen 80;" not in line]
    block = _UPSTREAM_BLOCK.search(original)
    assert block is not None
    assert all(line in block.group(0) for line in unmarked), unmarked


BAD_NGINX_EDITS: dict[str, tuple[Callable[[str], str], str]] = {
    # A typo in a directive name.
    "unknown_directive": (
        lambda text: text.replace("proxy_buffering off;", "proxy_bufering off;"),
        "unknown directive",
    ),
    # The last closing brace missing.
    "unbalanced_braces": (lambda text: text.rstrip().removesuffix("}"), "unexpected end of file"),
    # What the variable in proxy_pass avoids: a literal host name is resolved when the
    # configuration is loaded, so a name that exists only in Docker's DNS fails outside it (and
    # inside it, goes stale). `.invalid` never resolves (RFC 6761), wherever this runs.
    "static_upstream_host": (
        lambda text: text.replace(
            "        location / {\n            proxy_pass http://$api_upstream;",
            "        location / {\n            proxy_pass http://api.invalid:8000;",
        ),
        "host not found in upstream",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_NGINX_EDITS))
def test_nginx_t_rejects_broken_conf(tmp_path: Path, name: str) -> None:
    edit, expected = BAD_NGINX_EDITS[name]
    good = render_nginx_conf(NGINX_CONF.read_text(), tmp_path, _free_port())
    bad = edit(good)
    assert bad != good, f"negative control {name!r} did not change the file"
    proc = _nginx_test(tmp_path, bad)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"nginx -t accepted a broken conf ({name}):\n{out}"
    assert expected in out, out


def _nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def _nginx_seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[unit]


def _directive(text: str, name: str) -> str:
    values = re.findall(rf"^\s*{name}\s+([^;]+);", text, re.M)
    assert len(values) == 1, f"expected one `{name}` in deploy/nginx.conf, found {values}"
    return str(values[0]).strip()


def test_nginx_conf_matches_the_service_settings() -> None:
    from service.config import Settings

    text = NGINX_CONF.read_text()
    defaults = Settings.model_fields
    # The API, not nginx, refuses oversize bodies (with its problem+json and request id).
    body = _nginx_size(_directive(text, "client_max_body_size"))
    assert body > defaults["max_body_bytes"].default, body
    # A descent run may take SERVICE_DESCENT_DEADLINE_SECONDS before its (non-streamed) answer.
    read = _nginx_seconds(_directive(text, "proxy_read_timeout"))
    assert read > defaults["descent_deadline_seconds"].default, read
    assert "resolver 127.0.0.11 valid=10s" in text  # Docker's embedded DNS, short TTL
    assert "proxy_set_header X-Request-ID $req_id;" in text
    assert re.search(r'map \$http_x_request_id \$req_id \{[^}]*""\s+\$request_id;', text)
    descent = re.search(r"location /v1/gradient-descent \{(.*?)\}", text, re.S)
    assert descent and "proxy_buffering off;" in descent.group(1), "NDJSON must stream"


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    last = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"{what} exited with {proc.returncode} before {url} answered:\n{_tail(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = repr(exc)
        time.sleep(0.2)
    pytest.fail(f"{what}: {url} not 200 within 60 s (last: {last}):\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started (its own session), then anything left in its group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if os.name != "nt":
        try:  # workers left in the process group this test created (pgid == proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.mark.slow
def test_nginx_balances_two_replicas(tmp_path: Path) -> None:
    """deploy/nginx.conf in front of two `python -m service` processes: both serve requests."""
    nginx = _nginx()  # fail before starting anything
    ports = [_free_port(), _free_port()]
    addresses = [f"127.0.0.1:{port}" for port in ports]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        # 1. Two replicas, one worker each, logging to their own files.
        for port in ports:
            log = tmp_path / f"api-{port}.log"
            env = base_env | {
                "SERVICE_HOST": "127.0.0.1",
                "SERVICE_PORT": str(port),
                "SERVICE_WORKERS": "1",
                "SERVICE_LOG_LEVEL": "info",
                "PYTHONUNBUFFERED": "1",
            }
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "service"],
                        cwd=REPO,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            logs.append(log)
        for port, proc, log in zip(ports, procs, logs, strict=True):
            _wait_http(f"http://127.0.0.1:{port}/healthz", proc, log, f"replica on {port}")

        # 2. nginx with the real conf, upstream pointed at the two replicas.
        lb_port = _free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(render_nginx_conf(NGINX_CONF.read_text(), tmp_path, lb_port, addresses))
        access_log, nginx_err = tmp_path / "nginx-access.log", tmp_path / "nginx-stderr.log"
        cmd = _nginx_cmd(tmp_path, conf)
        assert cmd[0] == nginx
        with access_log.open("wb") as out, nginx_err.open("wb") as err:
            lb = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True)
        procs.append(lb)
        _wait_http(f"http://127.0.0.1:{lb_port}/nginx-health", lb, nginx_err, "nginx")

        # 3. Requests through the balancer on one kept-alive connection.
        token = uuid.uuid4().hex[:8]
        sent: dict[str, str] = {}  # request id -> path
        conn = HTTPConnection("127.0.0.1", lb_port, timeout=30)
        try:
            body = json.dumps({"index": [1, 0, 2], "dims": [2, 3, 4], "order": "F"})
            for i in range(10):
                rid = f"e2e-{token}-flat-{i}"
                conn.request(
                    "POST",
                    "/v1/flat",
                    body=body,
                    headers={"Content-Type": "application/json", "X-Request-ID": rid},
                )
                resp = conn.getresponse()
                payload = resp.read()
                assert resp.status == 200, (resp.status, payload)
                assert json.loads(payload)["flat"] == 13, payload  # 1 + 0*2 + 2*(2*3)
                assert resp.getheader("X-Request-ID") == rid  # passed through both ways
                sent[rid] = "/v1/flat"
            for i in range(10):
                rid = f"e2e-{token}-healthz-{i}"
                conn.request("GET", "/healthz", headers={"X-Request-ID": rid})
                resp = conn.getresponse()
                payload = resp.read()
                assert resp.status == 200, (resp.status, payload)
                assert resp.getheader("X-Request-ID") == rid
                sent[rid] = "/healthz"
            # Without a client id, nginx mints one ($request_id) and the API adopts it.
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            minted = resp.getheader("X-Request-ID") or ""
            assert resp.status == 200 and re.fullmatch(r"[0-9a-f]{32}", minted), minted
            # Answered by nginx itself, not forwarded.
            conn.request("GET", "/nginx-health")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"ok\n")
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 404, "per-replica /metrics must not be served through lb"
        finally:
            conn.close()

        # 4. Who served what: nginx's JSON access log names the upstream of every request ...
        served: dict[str, str] = {}
        for line in access_log.read_text().splitlines():
            entry = json.loads(line)
            served[entry["request_id"]] = entry["upstream_addr"]
        assert minted in served, f"minted id {minted} not in nginx's access log"
        for path in ("/v1/flat", "/healthz"):
            upstreams = {served[rid] for rid, p in sent.items() if p == path}
            assert upstreams == set(addresses), (
                f"{path}: nginx used {sorted(upstreams)}, expected both of {addresses}"
            )
        # ... and each replica's own log confirms it (the API logs the request id it was given).
        deadline = time.monotonic() + 10
        while True:
            texts = {addr: log.read_text() for addr, log in zip(addresses, logs, strict=True)}
            seen = {rid: [a for a, t in texts.items() if f'"{rid}"' in t] for rid in sent}
            if all(seen.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for rid, where in seen.items():
            assert where == [served[rid]], (
                f"request {rid}: nginx says {served[rid]}, replica logs show {where}"
            )
    finally:
        for proc in reversed(procs):
            _stop(proc)
