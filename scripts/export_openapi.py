"""Write openapi/openapi.json from the application (``python scripts/export_openapi.py``).

First the README's curl request bodies are harvested into ``service/api/request_examples.json``
(the document's request examples). ``--check`` exits 1 instead of writing when either committed
file differs.
"""

import argparse
import json
import sys
from pathlib import Path

from service.api.openapi_document import EXAMPLES_FILE
from service.config import Settings
from service.main import create_app
from tests.readme_examples import request_bodies

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "openapi" / "openapi.json"


def render_examples() -> str:
    """The request bodies of the README's curl examples, per path, as stable JSON text."""
    return json.dumps(request_bodies((ROOT / "README.md").read_text()), indent=2) + "\n"


def render() -> str:
    """The OpenAPI document of an app built with default settings, as stable JSON text."""
    return json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    examples = render_examples()
    if args.check:
        for path, text in ((EXAMPLES_FILE, examples), (TARGET, render())):
            if not path.exists() or path.read_text() != text:
                print(f"{path} is out of date: run python scripts/export_openapi.py",
                      file=sys.stderr)  # fmt: skip
                return 1
        return 0
    EXAMPLES_FILE.write_text(examples)
    print(f"wrote {EXAMPLES_FILE}")
    TARGET.write_text(render())  # after the examples: the document includes them
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
