"""Request ``Content-Encoding``: ``identity`` or ``gzip``, the latter decoded with a bound.

A compressed body is never parsed as if it were plain. gzip is decompressed in bounded steps:
the decompressed size counts against ``SERVICE_MAX_BODY_BYTES`` like a plain body, so a 64 KB
"zip bomb" that would expand to gigabytes stops at the limit + 1 bytes (413). Any other coding is
refused before the body is read (415): the service does not read it.
"""

import zlib

from starlette.requests import Request

from ..engine.errors import LimitExceeded
from .problems import InvalidBody, UnsupportedMediaType

CODINGS = ("identity", "gzip")
# Decompressed in steps of this many bytes, so that the bound holds however well the body packs.
STEP = 1 << 20
# zlib's wbits for the gzip container (header and CRC checked).
GZIP_WBITS = 16 + zlib.MAX_WBITS


def content_coding(request: Request) -> str:
    """Return ``"identity"`` or ``"gzip"`` for the request's ``Content-Encoding``.

    Raises
    ------
    UnsupportedMediaType
        For any other coding, or several (415).
    """
    coding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if coding not in CODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {coding!r} is not read here: send the body as it is (identity) "
            "or gzip-compressed"
        )
    return coding


def gunzip(raw: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing it as soon as it would exceed ``limit`` bytes.

    Parameters
    ----------
    raw : bytes
        The body as received.
    limit : int
        ``SERVICE_MAX_BODY_BYTES``: the bound on the decompressed size.

    Returns
    -------
    bytes

    Raises
    ------
    LimitExceeded
        If the decompressed body is longer than ``limit`` (413, ``max_body_bytes``); at most
        ``limit + STEP`` bytes are ever produced.
    InvalidBody
        If ``raw`` is not one complete gzip member (400).
    """
    inflater = zlib.decompressobj(GZIP_WBITS)
    parts: list[bytes] = []
    size = 0
    pending = raw
    try:
        while pending:
            part = inflater.decompress(pending, STEP)
            size += len(part)
            if size > limit:
                raise LimitExceeded(
                    "decompressed request body bytes (at least)", size, limit,
                    "compress less, or send the body uncompressed", setting="max_body_bytes",
                )  # fmt: skip
            parts.append(part)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        if not inflater.eof:
            raise InvalidBody("the gzip body ends before its end-of-stream marker")
    except zlib.error as error:
        raise InvalidBody(f"the body is not valid gzip: {error}") from None
    if inflater.unused_data:
        raise InvalidBody("the gzip body has bytes after its end-of-stream marker")
    return b"".join(parts)
