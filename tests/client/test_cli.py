"""The `jacobian` command as a subprocess on .npy files: the files it writes equal raw answers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from jacobian_client.cli import cli

from tests.client import raw
from tests.client.raw import listed, same_bits
from tests.e2e.live import LiveServer

COMMANDS = ["health", "ops", "eval", "jacobian", "xcorr", "descent"]


def jacobian(server: LiveServer, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jacobian_client ARGS`` (the entry point's module) against ``server``."""
    env = {**os.environ, "JACOBIAN_URL": server.base_url}
    return subprocess.run(
        [sys.executable, "-m", "jacobian_client", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    np.save(tmp_path / "x.npy", rng.normal(size=(3, 2)))
    np.save(tmp_path / "img.npy", rng.normal(size=(2, 6, 5)))
    np.save(tmp_path / "k.npy", rng.normal(size=(2, 3, 3)))
    np.save(tmp_path / "x0.npy", np.array([3.0, 0.0]))
    return tmp_path


def test_jacobian_writes_a_scipy_loadable_npz(server: LiveServer, files: Path) -> None:
    run = jacobian(
        server,
        "jacobian",
        '["tanh", {"op": "sum", "axes": [0]}]',
        "--input",
        "x=x.npy",
        "--wrt",
        "x",
        "--format",
        "coo",
        "-o",
        "J.npz",
        cwd=files,
    )
    assert run.returncode == 0, run.stderr
    x = np.load(files / "x.npy")
    answer = raw.post(
        server.base_url,
        "/v1/jacobian",
        {
            "x": listed(x),
            "function": [{"op": "tanh"}, {"op": "sum", "axes": [0]}],
            "format": "coo",
            "encoding": "base64",
        },
    )
    expected = raw.coo(answer["jacobian"])
    loaded = sp.load_npz(files / "J.npz")
    assert loaded.shape == expected["shape"]
    assert loaded.row.tolist() == expected["row"].tolist()
    assert loaded.col.tolist() == expected["col"].tolist()
    same_bits(loaded.data, expected["data"])
    with np.load(files / "J.npz") as npz:
        labels = (
            tuple(npz["in_shape"]),
            tuple(npz["out_shape"]),
            str(npz["layout"]),
            str(npz["order"]),
        )
    assert labels == expected["labels"]


def test_xcorr_writes_the_coo_jacobian(server: LiveServer, files: Path) -> None:
    run = jacobian(
        server,
        "xcorr",
        "--x",
        "img.npy",
        "--kernel",
        "k.npy",
        "--jacobian",
        "coo",
        "-o",
        "J.npz",
        "--output-map",
        "y.npy",
        cwd=files,
    )
    assert run.returncode == 0, run.stderr
    answer = raw.post(
        server.base_url,
        "/v1/cross-correlation",
        {
            "x": listed(np.load(files / "img.npy")),
            "kernel": listed(np.load(files / "k.npy")),
            "jacobian": "coo",
            "encoding": "base64",
        },
    )
    expected = raw.coo(answer["jacobian_x"])
    loaded = sp.load_npz(files / "J.npz")
    assert loaded.row.tolist() == expected["row"].tolist() and loaded.shape == expected["shape"]
    same_bits(loaded.data, expected["data"])
    same_bits(np.load(files / "y.npy"), raw.tensor(answer["output"]))


def test_descent_streams_progress_and_writes_the_final_x(server: LiveServer, files: Path) -> None:
    function = [{"op": "add", "constant": {"data": [-1.0, 2.0]}}, {"op": "squared_norm"}]
    run = jacobian(
        server,
        "descent",
        json.dumps(function),
        "--x0",
        "x0.npy",
        "--lr",
        "0.25",
        "--max-steps",
        "8",
        "--record-every",
        "2",
        "-o",
        "xf.npy",
        cwd=files,
    )
    assert run.returncode == 0, run.stderr
    answer = raw.post(
        server.base_url,
        "/v1/gradient-descent",
        {
            "function": function,
            "x0": {"data": [3.0, 0.0]},
            "learning_rate": 0.25,
            "max_steps": 8,
            "record_every": 2,
            "encoding": "base64",
        },
    )
    same_bits(np.load(files / "xf.npy"), raw.tensor(answer["x_final"]))
    progress = [line for line in run.stderr.splitlines() if line.startswith("step")]
    assert [int(line.split()[1]) for line in progress] == [p["step"] for p in answer["trajectory"]]
    assert f"{answer['status']}: {answer['reason']}" in run.stderr


def test_eval_prints_json_and_ops_and_health_answer(server: LiveServer, files: Path) -> None:
    run = jacobian(server, "eval", '["square", "sum"]', "-i", "x=[1, 2, 3]", cwd=files)
    assert run.returncode == 0 and json.loads(run.stdout) == 14.0
    run = jacobian(server, "ops", cwd=files)
    assert run.returncode == 0 and any(
        line.startswith("xcorr2d ") for line in run.stdout.splitlines()
    )
    run = jacobian(server, "health", cwd=files)
    assert json.loads(run.stdout) == {"healthz": {"status": "ok"}, "readyz": {"status": "ready"}}


def test_a_reader_that_leaves_ends_the_command_quietly(server: LiveServer, files: Path) -> None:
    """``jacobian ops | head``: stdout's reader is gone, which is no error worth a message."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE, deterministically
    try:
        run = subprocess.run(
            [sys.executable, "-m", "jacobian_client", "ops"],
            cwd=files,
            env={**os.environ, "JACOBIAN_URL": server.base_url},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (run.returncode, run.stderr) == (1, "")


def test_a_problem_is_printed_with_its_pointer(server: LiveServer, files: Path) -> None:
    run = jacobian(server, "eval", '[{"op": "scale", "factor": "a"}]', "-i", "x=x.npy", cwd=files)
    assert run.returncode == 1
    assert (
        "422" in run.stderr and "/function/0/factor" in run.stderr and "Traceback" not in run.stderr
    )


def test_the_command_has_help(server: LiveServer, files: Path) -> None:
    run = jacobian(server, "--help", cwd=files)
    assert run.returncode == 0 and "Usage: jacobian" in run.stdout, run.stderr
    assert set(COMMANDS) <= set(run.stdout.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    # In-process (click's runner): the same parser, without a Python start-up per command.
    result = CliRunner().invoke(cli, [command, "--help"], prog_name="jacobian")
    assert result.exit_code == 0 and f"Usage: jacobian {command}" in result.output, result.output
