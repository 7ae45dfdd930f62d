"""Container artefacts: Dockerfile, .dockerignore and docker-compose.yml.

No Docker engine is available here (no ``docker build``, no ``docker compose``), so the files are
checked statically and the image's install step is replayed in a fresh virtualenv:

* ``hadolint --failure-threshold warning`` on the Dockerfile (plus negative controls),
* ``check-jsonschema --builtin-schema vendor.compose-spec`` on the compose file (plus negative
  controls),
* structural facts parsed from both files (base image, non-root user, health checks, ports),
* the Dockerfile's build-context files installed non-editable into a new venv, then
  ``python -m service`` started on loopback and ``/healthz`` polled until it answers 200.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
DOCKERIGNORE = REPO / ".dockerignore"

BASE_IMAGE = "python:3.11-slim"
COMPOSE_SCHEMA = "vendor.compose-spec"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


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
        pytest.fail(
            f"`{name}` executable not found next to {sys.executable} or on PATH. It is a dev "
            f"dependency: run `pip install -e '.[dev]'` (or `bash scripts/test.sh`).",
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
    doc["services"]["api"]["ports"] = "8000:8000"
    return "$.services.api.ports"


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
    assert env.get("SERVICE_WORKERS") == "2"
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


def test_compose_healthcheck_targets_healthz(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    test = api["healthcheck"]["test"]
    argv = test if isinstance(test, list) else ["CMD-SHELL", test]
    assert argv[0] in {"CMD", "CMD-SHELL"}
    joined = " ".join(str(a) for a in argv[1:])
    assert "/healthz" in joined and "urllib" in joined, joined
    assert "curl" not in joined and "wget" not in joined
    if argv[0] == "CMD":
        compile(str(argv[argv.index("-c") + 1]), "<compose healthcheck>", "exec")


def test_compose_service_wiring(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    build = api["build"]
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    context = build.get("context", ".") if isinstance(build, dict) else build
    assert (REPO / context / dockerfile).resolve() == DOCKERFILE
    assert "8000:8000" in [str(p) for p in api["ports"]]
    assert api.get("restart") in {"always", "unless-stopped", "on-failure"}
    limits = api["deploy"]["resources"]["limits"]
    assert "memory" in limits and "cpus" in limits
    env = api["environment"]
    env_keys = set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
    for key in (
        "SERVICE_HOST",
        "SERVICE_MAX_BODY_BYTES",
        "SERVICE_MAX_TENSOR_ELEMENTS",
        "SERVICE_MAX_RANK",
        "SERVICE_MAX_DENSE_JACOBIAN_ELEMENTS",
        "SERVICE_MAX_COO_NNZ",
    ):
        assert key in env_keys, f"{key} not configured in compose"


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
