"""Where tests keep what they draw: ``ci-artifacts/`` always, ``docs/images/`` on request.

``REGENERATE_DOCS_IMAGES=1`` makes the picture and playground tests also write the README's
images (see the README section *Pictures and the playground* for the command).
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "ci-artifacts"
DOCS_IMAGES = ROOT / "docs" / "images"


def save_artifact(name: str, content: bytes, *, docs: bool = False) -> Path:
    """Write ``content`` as ``ci-artifacts/<name>``; also as ``docs/images/<name>`` if asked.

    ``docs`` marks the images the README shows; they are rewritten only when the environment
    says ``REGENERATE_DOCS_IMAGES=1``, so an ordinary test run leaves the work tree clean.
    """
    path = ARTIFACTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if docs and os.environ.get("REGENERATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        (DOCS_IMAGES / name).write_bytes(content)
    return path
