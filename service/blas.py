"""One OpenBLAS kernel family and one thread on every host, so that answers do not depend on it.

NumPy's and SciPy's wheels each bundle OpenBLAS built for many CPUs at once; when it loads, it
picks the kernels of the CPU it finds. A dot product or a matrix-vector product sums in the order
its kernel does, so the same request answered on an AVX-512 host (SkylakeX, Cooperlake or
SapphireRapids kernels) and on another host (Haswell kernels, which OpenBLAS also uses for AMD's
Zen) differs in the last bits of descents, minimizations and programs with dense matrices. The
service answers with one family everywhere: the Haswell kernels, which every x86-64 CPU with AVX2
and FMA runs. The answers pinned by the tests (``tests/fixtures``) are theirs, with NumPy's own
AVX-512 loops, which this does not pin: an AVX2-only host answers other last bits of ``exp``,
``log`` and ``power`` (README, "The same bits on every host").

OpenBLAS also starts as many threads as the host has cores, and splits a dot product of more than
10,000 values, and some matrix products, among them: each thread sums its part and the parts are
added, so every thread count answers other last bits (descents and minimizations of more than
10,000 variables, ``mse``, the gradients of dense products). Its idle threads also spin on a core
for 2^28 processor cycles after each call before they sleep (OpenBLAS's default), CPU time taken
from the other requests. The service asks for one thread (``OPENBLAS_NUM_THREADS=1``): the same
bits on every host, whatever its cores, and no spinning; it runs requests side by side instead.

OpenBLAS reads ``OPENBLAS_CORETYPE`` and ``OPENBLAS_NUM_THREADS`` once, when it is loaded, so
:func:`pin_kernels` and :func:`pin_threads` must run before NumPy is first imported:
``service/__init__.py`` calls them, which is before any module of the service imports NumPy. An
operator's own values are kept (for example the faster AVX-512 kernels of large matrix products,
or more threads for one large request at a time, at the price of host-dependent last bits).
:func:`loaded_kernels` reports what was loaded (``GET /v1/metadata``), and :func:`check_kernels`
and :func:`check_threads` log a warning when that is not what was asked for, because NumPy was
imported first.

This module imports nothing that loads OpenBLAS.
"""

import functools
import logging
import os
import platform
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

CORETYPE_VARIABLE = "OPENBLAS_CORETYPE"
PINNED_CORETYPE = "Haswell"
# OpenBLAS reads this before GOTO_NUM_THREADS and OMP_NUM_THREADS, so setting it decides the count
# whatever those say; only an operator's own OPENBLAS_NUM_THREADS is kept.
THREADS_VARIABLE = "OPENBLAS_NUM_THREADS"
PINNED_THREADS = 1
# The instructions the Haswell kernels execute: without them OpenBLAS would stop the process
# with an illegal instruction, so a CPU that lacks one is left to OpenBLAS's own choice.
REQUIRED_FLAGS = frozenset({"avx", "avx2", "fma"})
X86_64 = frozenset({"x86_64", "amd64"})
CPUINFO = Path("/proc/cpuinfo")

logger = logging.getLogger(__name__)


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """Return the instruction-set flags of the first processor in a ``/proc/cpuinfo`` text.

    Parameters
    ----------
    cpuinfo : str
        The text of ``/proc/cpuinfo`` (Linux).

    Returns
    -------
    frozenset of str
        Empty if the text has no ``flags`` line.
    """
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def _read_cpuinfo() -> str:
    try:
        return CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""  # not Linux: no flags known, nothing is pinned


def pin_kernels(
    environ: MutableMapping[str, str] | None = None,
    machine: str | None = None,
    cpuinfo: str | None = None,
) -> str | None:
    """Ask OpenBLAS for the Haswell kernels, unless told otherwise or unable to run them.

    Parameters
    ----------
    environ : mapping, optional
        The environment to set ``OPENBLAS_CORETYPE`` in (default: ``os.environ``).
    machine : str, optional
        ``platform.machine()`` (default: this host's).
    cpuinfo : str, optional
        The text of ``/proc/cpuinfo`` (default: this host's; empty off Linux).

    Returns
    -------
    str or None
        The core type OpenBLAS will be asked for: the operator's if ``OPENBLAS_CORETYPE`` was
        set, ``"Haswell"`` if this call set it, None if nothing is set (not x86-64, a CPU
        without AVX2 and FMA, flags unknown).
    """
    environ = os.environ if environ is None else environ
    if environ.get(CORETYPE_VARIABLE):
        return environ[CORETYPE_VARIABLE]
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in X86_64:
        return None
    flags = cpu_flags(_read_cpuinfo() if cpuinfo is None else cpuinfo)
    if not REQUIRED_FLAGS <= flags:
        return None
    environ[CORETYPE_VARIABLE] = PINNED_CORETYPE
    return PINNED_CORETYPE


def pin_threads(environ: MutableMapping[str, str] | None = None) -> str:
    """Ask OpenBLAS for one thread, unless the operator chose a count.

    Parameters
    ----------
    environ : mapping, optional
        The environment to set ``OPENBLAS_NUM_THREADS`` in (default: ``os.environ``).

    Returns
    -------
    str
        The value OpenBLAS will read: the operator's ``OPENBLAS_NUM_THREADS`` if it was set,
        ``"1"`` if this call set it.
    """
    environ = os.environ if environ is None else environ
    if environ.get(THREADS_VARIABLE):
        return environ[THREADS_VARIABLE]
    environ[THREADS_VARIABLE] = str(PINNED_THREADS)
    return environ[THREADS_VARIABLE]


@functools.cache
def loaded_kernels() -> list[dict[str, Any]]:
    """Describe the OpenBLAS libraries this process has loaded (NumPy's and SciPy's).

    Read once per process: a library's kernels are chosen when it loads.

    Returns
    -------
    list of dict
        One per library: ``library`` (file name), ``version``, ``architecture`` (the kernel
        family in use) and ``threads``.
    """
    import numpy  # noqa: F401  (loads NumPy's OpenBLAS, if the caller has not yet)
    import scipy.linalg  # noqa: F401  (and SciPy's)
    from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

    return [
        {
            "library": Path(info["filepath"]).name,
            "version": info.get("version"),
            "architecture": info.get("architecture"),
            "threads": info["num_threads"],
        }
        for info in threadpool_info()
        if info.get("internal_api") == "openblas"
    ]


def check_kernels(expected: str | None = None) -> list[dict[str, Any]]:
    """Warn if a loaded OpenBLAS runs kernels other than the ones asked for.

    Parameters
    ----------
    expected : str, optional
        The core type asked for (default: ``OPENBLAS_CORETYPE`` of this process).

    Returns
    -------
    list of dict
        The libraries whose architecture differs (empty when nothing was asked for).
    """
    expected = os.environ.get(CORETYPE_VARIABLE) if expected is None else expected
    if not expected:
        return []
    # OpenBLAS names the family in its own spelling ("Haswell"); compare without case.
    wrong = [k for k in loaded_kernels() if (k["architecture"] or "").lower() != expected.lower()]
    for library in wrong:
        logger.warning(
            "OpenBLAS %s runs %s kernels, not %s (was NumPy imported before the service?): "
            "last bits of answers may differ from other hosts'",
            library["library"],
            library["architecture"],
            expected,
        )
    return wrong


def check_threads(asked: str | None = None) -> list[dict[str, Any]]:
    """Warn if a loaded OpenBLAS runs more threads than asked for.

    OpenBLAS runs fewer than asked on a host with fewer cores, never more: more means that it
    was loaded before :func:`pin_threads` ran.

    Parameters
    ----------
    asked : str, optional
        The thread count asked for (default: ``OPENBLAS_NUM_THREADS`` of this process).

    Returns
    -------
    list of dict
        The libraries that run more threads (empty when no count was asked for).
    """
    asked = os.environ.get(THREADS_VARIABLE) if asked is None else asked
    # OpenBLAS reads the value with atoi: anything but a positive count leaves the choice to it.
    count = int(asked) if asked and asked.strip().isdigit() else 0
    if count < 1:
        return []
    wrong = [k for k in loaded_kernels() if k["threads"] > count]
    for library in wrong:
        logger.warning(
            "OpenBLAS %s runs %d threads, not %d (was NumPy imported before the service?): "
            "last bits of answers may differ from other hosts', and idle threads spin",
            library["library"],
            library["threads"],
            count,
        )
    return wrong
