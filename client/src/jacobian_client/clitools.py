"""Helpers of the ``jacobian`` command: arguments, inputs, outputs and error reporting."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from .client import Client
from .errors import ProblemError
from .files import FileFormatError, parse_value, save_result, to_json
from .functions import Function
from .results import DescentRecord
from .transport import DescentStream

ORDER = click.Choice(["F", "C"])
LAYOUT = click.Choice(["in_out", "out_in"])


def make_client(ctx: click.Context) -> Client:
    """Return a client configured by the root command's options."""
    options = ctx.find_root().params
    return Client(
        options["url"],
        api_key=options["api_key"],
        encoding=options["encoding"],
        timeout=options["timeout"],
    )


def parse_function(text: str) -> Function:
    """Read FUNCTION: ``@file``, a JSON op list or graph, or else an expression."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        function: Function = json.loads(stripped)
        return function
    return stripped


def parse_inputs(pairs: Sequence[str]) -> dict[str, Any]:
    """Read ``NAME=FILE`` (or ``NAME=<JSON>``) pairs into a dict of arrays."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}: expected NAME=FILE")
        inputs[name] = parse_value(value, name)
    return inputs


def emit(result: Any, output: str | None, name: str = "value") -> None:
    """Write ``result`` to ``output``, one file per name for a dict of Jacobians, or print it.

    Several Jacobians (``--wrt x --wrt k``) go to ``J-x.npz``, ``J-k.npz`` for ``-o J.npz``.
    """
    if output is None:
        click.echo(json.dumps(to_json(result)))
        return
    if isinstance(result, dict) and any(hasattr(v, "meta") for v in result.values()):
        path = Path(output)
        for key, value in result.items():
            target = path.with_name(f"{path.stem}-{key}{path.suffix}")
            save_result(target, value, key)
            click.echo(f"wrote {target}", err=True)
        return
    save_result(output, result, name)
    click.echo(f"wrote {output}", err=True)


def handle_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn problems (exit 1) and input/output errors (exit 2) into one readable stderr line.

    A closed pipe on stdout (exit 1) prints nothing.
    """

    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except ProblemError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # The reader left (`jacobian ops | head`): stop quietly, as the shell's own tools do.
            # stdout goes to /dev/null first, or Python's flush of it at exit fails again and
            # prints its own message (the recipe in Python's signal docs, "Note on SIGPIPE").
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except (FileFormatError, OSError, ValueError, TypeError) as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)

    run.__name__ = command.__name__
    run.__doc__ = command.__doc__
    return run


def function_command(command: Callable[..., None]) -> Callable[..., None]:
    """Add FUNCTION, ``--input``, ``--order`` and ``-o`` to a command."""
    for decorator in reversed(
        [
            click.argument("function"),
            click.option(
                "--input",
                "-i",
                "inputs",
                multiple=True,
                metavar="NAME=FILE",
                help="An input: .npy, .npz, .json or a JSON literal. Repeatable.",
            ),
            click.option(
                "--order",
                type=ORDER,
                default="F",
                show_default=True,
                help="Index order of vec/flat.",
            ),
            click.option(
                "-o",
                "--output",
                type=click.Path(dir_okay=False),
                default=None,
                help="Write the result (.npy, .npz or .json); else print JSON.",
            ),
        ]
    ):
        command = decorator(command)
    return command


def run_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add the start points, stopping rules and progress options of descent and minimize."""
    decorators: list[Callable[[Callable[..., None]], Callable[..., None]]] = [
        function_command,
        click.option("--x0", default=None, metavar="FILE", help="Start of x (op-list form)."),
        click.option(
            "--variable",
            "variables",
            multiple=True,
            metavar="NAME=FILE",
            help="An input that moves, with its start (programs). Repeatable.",
        ),
        click.option("--max-steps", type=int, required=True),
        click.option("--grad-tol", type=float, default=None),
        click.option("--f-tol", type=float, default=None),
        click.option("--x-tol", type=float, default=None),
        click.option("--record-every", type=int, default=1, show_default=True),
        click.option("--quiet", "-q", is_flag=True, help="No progress lines."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def start_points(
    inputs: Sequence[str], x0: str | None, variables: Sequence[str]
) -> tuple[dict[str, Any], list[str] | None]:
    """Return every input (fixed ones and starts) and the moving names (None: the x0 form)."""
    starts = parse_inputs(variables)
    if x0 is not None:
        starts["x"] = parse_value(x0, "x")
    return {**parse_inputs(inputs), **starts}, (list(starts) if variables else None)


def progress_line(record: DescentRecord) -> str:
    """One line of run progress: step, f, ‖∇f‖, step size, and evaluation counts if any."""
    rate = "-" if record.learning_rate is None else f"{record.learning_rate:.3g}"
    line = f"step {record.step:>7}  f {record.f: .6e}  |grad f| {record.grad_norm:.3e}  lr {rate}"
    if record.evaluations:
        line += "  evals " + "/".join(str(n) for n in record.evaluations.values())
    return line


def follow(stream: DescentStream, quiet: bool, output: str | None) -> None:
    """Print a progress line per record (in place on a terminal), then write the result."""
    live = sys.stderr.isatty()
    with stream:
        for record in stream:
            if not quiet:
                click.echo(("\r" if live else "") + progress_line(record), err=True, nl=not live)
        result = stream.result
    if live and not quiet:
        click.echo("", err=True)
    click.echo(f"{result.status}: {result.reason}", err=True)
    single = len(result.final) == 1 and (output is None or output.endswith(".npy"))
    emit(next(iter(result.final.values())) if single else result.final, output, "x")
