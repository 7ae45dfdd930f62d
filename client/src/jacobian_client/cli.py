"""The ``jacobian`` command: the client's methods for shell users and scripts.

Every command reads arrays from ``.npy``, ``.npz`` or ``.json`` files (or a JSON literal), writes
``-o FILE`` as ``.npy``, ``.npz`` (SciPy-loadable for sparse Jacobians) or ``.json``, and prints
JSON when no ``-o`` is given. The service's address and key come from ``--url``/``--api-key`` or
``JACOBIAN_URL``/``JACOBIAN_API_KEY``. A problem answer is printed readably to stderr with exit
status 1.

FUNCTION is an expression (``'sum(tanh(x))'``), a JSON op list (``'["tanh", "sum"]'`` or
``'[{"op": "scale", "factor": 2}]'``), a JSON graph, or ``@file.json`` holding one of these.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, get_args

import click

from .calls import Format, Strategy
from .client import DEFAULT_ENCODING
from .clitools import (
    LAYOUT,
    ORDER,
    emit,
    follow,
    function_command,
    handle_errors,
    make_client,
    parse_function,
    parse_inputs,
    run_options,
    start_points,
)
from .files import parse_value
from .results import Layout, Order
from .runs import Method
from .transport import DEFAULT_URL
from .wire import ENCODINGS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="JACOBIAN_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Base URL of the service (env JACOBIAN_URL).",
)
@click.option(
    "--api-key",
    envvar="JACOBIAN_API_KEY",
    default=None,
    help="API key, when the service requires one (env JACOBIAN_API_KEY).",
)
@click.option(
    "--encoding",
    type=click.Choice(ENCODINGS),
    envvar="JACOBIAN_ENCODING",
    default=DEFAULT_ENCODING,
    show_default=True,
    help="How tensors travel.",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds for connecting and for each read.",
)
@click.version_option(package_name="jacobian-client")
def cli(url: str, api_key: str | None, encoding: str, timeout: float) -> None:
    """Tensor calculus on a jacobian-service: Jacobians, JVP/VJP, cross-correlation, descent."""


@cli.command()
@click.pass_context
@handle_errors
def health(ctx: click.Context) -> None:
    """Print the service's liveness and readiness."""
    with make_client(ctx) as client:
        click.echo(json.dumps({"healthz": client.health(), "readyz": client.ready()}))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON listing.")
@click.pass_context
@handle_errors
def ops(ctx: click.Context, as_json: bool) -> None:
    """List the operations functions are made of, with their parameters."""
    with make_client(ctx) as client:
        operations = client.ops()
    if as_json:
        click.echo(json.dumps(operations))
        return
    for operation in operations:
        params = ", ".join(operation.get("params", {})) or "-"
        kind = "linear" if operation.get("linear") else "nonlinear"
        click.echo(f"{operation['name']:<14} {kind:<10} {params}")


@cli.command(name="eval")
@function_command
@click.pass_context
@handle_errors
def evaluate(
    ctx: click.Context, function: str, inputs: tuple[str, ...], order: Order, output: str | None
) -> None:
    """Evaluate FUNCTION at the inputs."""
    with make_client(ctx) as client:
        value = client.evaluate(parse_function(function), inputs=parse_inputs(inputs), order=order)
    emit(value, output)


@cli.command()
@function_command
@click.option("--wrt", multiple=True, help="Differentiate with respect to this input. Repeatable.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "coo", "dense"]),
    default="auto",
    show_default=True,
    help="Matrix format of the Jacobian.",
)
@click.option(
    "--strategy",
    type=click.Choice(["auto", "chain", "reverse", "forward"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--layout",
    type=LAYOUT,
    default="in_out",
    show_default=True,
    help="in_out: rows index the input (the notes); out_in: rows index the output.",
)
@click.option("--check", is_flag=True, help="Also run the service's finite-difference check.")
@click.pass_context
@handle_errors
def jacobian(
    ctx: click.Context,
    function: str,
    inputs: tuple[str, ...],
    order: Order,
    output: str | None,
    wrt: tuple[str, ...],
    fmt: Format,
    strategy: Strategy,
    layout: Layout,
    check: bool,
) -> None:
    """Compute the Jacobian of FUNCTION at the inputs (.npz: SciPy-loadable when sparse)."""
    with make_client(ctx) as client:
        result = client.jacobian(
            parse_function(function),
            inputs=parse_inputs(inputs),
            wrt=None if not wrt else wrt[0] if len(wrt) == 1 else list(wrt),
            format=fmt,
            strategy=strategy,
            layout=layout,
            order=order,
            check=check,
        )
    first = next(iter(result.values())) if isinstance(result, dict) else result
    if check and first.meta.check is not None:
        report = first.meta.check
        click.echo(
            f"check: passed={report['passed']} max_rel_error={report['max_rel_error']:.3e}",
            err=True,
        )
    emit(result, output, "jacobian")


@cli.command()
@click.option("--x", "x_value", required=True, metavar="FILE", help="Image, (C, H, W).")
@click.option("--kernel", required=True, metavar="FILE", help="Kernel, (C, H', W').")
@click.option("--stride", nargs=2, type=int, default=(1, 1), show_default=True)
@click.option("--dilation", nargs=2, type=int, default=(1, 1), show_default=True)
@click.option(
    "--padding",
    default="valid",
    show_default=True,
    help="valid, same, full, or JSON [[top, bottom], [left, right]].",
)
@click.option(
    "--jacobian",
    "jac",
    type=click.Choice(["none", "coo", "dense"]),
    default="none",
    show_default=True,
    help="Also return the Jacobian (then -o writes it).",
)
@click.option(
    "--wrt",
    multiple=True,
    type=click.Choice(["x", "kernel"]),
    help="Jacobian with respect to x (default) and/or kernel.",
)
@click.option("--layout", type=LAYOUT, default="in_out", show_default=True)
@click.option("--order", type=ORDER, default="F", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="The Jacobian if asked for, else the output map.",
)
@click.option(
    "--output-map",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the correlation output here.",
)
@click.pass_context
@handle_errors
def xcorr(
    ctx: click.Context,
    x_value: str,
    kernel: str,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: str,
    jac: Literal["none", "coo", "dense"],
    wrt: tuple[str, ...],
    layout: Layout,
    order: Order,
    output: str | None,
    output_map: str | None,
) -> None:
    """Cross-correlate an image with a kernel (the seed notes' x * k), optionally its Jacobian."""
    pad: Any = json.loads(padding) if padding.lstrip().startswith("[") else padding
    with make_client(ctx) as client:
        result = client.cross_correlation(
            parse_value(x_value),
            parse_value(kernel),
            stride=stride,
            padding=pad,
            dilation=dilation,
            jacobian=jac,
            wrt=list(wrt) or ["x"],
            layout=layout,
            order=order,
        )
    if output_map is not None:
        emit(result.output, output_map, "output")
    if jac == "none":
        emit(result.output, output, "output")
        return
    jacobians = {"x": result.jacobian_x, "kernel": result.jacobian_kernel}
    present = {name: j for name, j in jacobians.items() if j is not None}
    emit(next(iter(present.values())) if len(present) == 1 else present, output, "jacobian")


@cli.command()
@run_options
@click.option("--lr", "--learning-rate", "learning_rate", type=float, required=True)
@click.option("--momentum", type=float, default=0.0, show_default=True)
@click.option("--nesterov", is_flag=True)
@click.option(
    "--line-search", type=click.Choice(["none", "backtracking"]), default="none", show_default=True
)
@click.pass_context
@handle_errors
def descent(
    ctx: click.Context,
    function: str,
    inputs: tuple[str, ...],
    order: Order,
    output: str | None,
    x0: str | None,
    variables: tuple[str, ...],
    quiet: bool,
    **options: Any,
) -> None:
    """Gradient descent on a scalar FUNCTION, with a progress line per recorded step.

    -o writes the final x (.npy), or every variable's final value (.npz/.json).
    """
    named, moving = start_points(inputs, x0, variables)
    with make_client(ctx) as client:
        stream = client.gradient_descent(
            parse_function(function),
            inputs=named,
            stream=True,
            variables=moving,
            order=order,
            **options,
        )
        follow(stream, quiet, output)


@cli.command()
@run_options
@click.option("--method", type=click.Choice(list(get_args(Method))), required=True)
@click.option(
    "--lr",
    "--learning-rate",
    "learning_rate",
    type=float,
    default=None,
    help="gd and adam: the step size.",
)
@click.option("--memory", type=int, default=None, help="lbfgs: corrections kept.")
@click.option("--lower", type=float, default=None, help="lbfgs: lower bound of every element.")
@click.option("--upper", type=float, default=None, help="lbfgs: upper bound of every element.")
@click.pass_context
@handle_errors
def minimize(
    ctx: click.Context,
    function: str,
    inputs: tuple[str, ...],
    order: Order,
    output: str | None,
    x0: str | None,
    variables: tuple[str, ...],
    quiet: bool,
    lower: float | None,
    upper: float | None,
    **options: Any,
) -> None:
    """Minimize a scalar FUNCTION (gd, adam, lbfgs, newton-cg, trust-ncg), with live progress.

    -o writes the final x (.npy), or every variable's final value (.npz/.json).
    """
    named, moving = start_points(inputs, x0, variables)
    if lower is not None or upper is not None:
        options["bounds"] = dict.fromkeys(moving or ["x"], (lower, upper))
    with make_client(ctx) as client:
        stream = client.minimize(
            parse_function(function),
            inputs=named,
            stream=True,
            variables=moving,
            order=order,
            **options,
        )
        follow(stream, quiet, output)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``jacobian`` command (the package's console entry point)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="jacobian")
