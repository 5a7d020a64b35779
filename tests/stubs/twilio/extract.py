"""Cut the Messages create call out of Twilio's OpenAPI document (run by hand, not by tests).

The stub validates requests against `messages_create.json` beside this file: the
`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` operation and every schema it
references, transitively, from Twilio's document (MIT, see LICENSE). The whole document is
1.9 MB; this part is what the tests need. To refresh it:

    curl -sSfLo /tmp/twilio_api_v2010.json \\
        https://raw.githubusercontent.com/twilio/twilio-oai/main/spec/json/twilio_api_v2010.json
    python tests/stubs/twilio/extract.py /tmp/twilio_api_v2010.json

The output names the source's info.version and sha256, so a refresh shows in the diff.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
SOURCE = "https://github.com/twilio/twilio-oai (spec/json/twilio_api_v2010.json)"
OUTPUT = Path(__file__).resolve().with_name("messages_create.json")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def extract(document: dict[str, Any], digest: str) -> dict[str, Any]:
    path_item = document["paths"][MESSAGES_PATH]
    operation = path_item["post"]
    kept: dict[str, dict[str, Any]] = {}  # component section -> name -> definition
    pending = list(_refs(operation))
    while pending:
        ref = pending.pop()
        if not ref.startswith("#/components/"):
            raise ValueError(f"unexpected $ref {ref!r}")
        section, _, name = ref.removeprefix("#/components/").partition("/")
        if name in kept.setdefault(section, {}):
            continue
        definition = document["components"][section][name]
        kept[section][name] = definition
        pending.extend(_refs(definition))
    schemes = {name for requirement in operation.get("security", document.get("security", []))
               for name in requirement}
    kept["securitySchemes"] = {name: document["components"]["securitySchemes"][name]
                               for name in sorted(schemes)}
    tags = set(operation.get("tags", ()))
    return {
        "openapi": document["openapi"],
        "info": {
            **document["info"],
            "x-extracted-from": {"source": SOURCE, "info.version": document["info"]["version"],
                                 "sha256": digest, "license": "MIT (see LICENSE)",
                                 "by": "tests/stubs/twilio/extract.py"},
        },
        "servers": document.get("servers", []),
        "tags": [t for t in document.get("tags", []) if t["name"] in tags],
        "paths": {MESSAGES_PATH: {**{k: v for k, v in path_item.items()
                                     if k not in ("get", "post")},
                                  "post": operation}},
        "components": {section: dict(sorted(names.items()))
                       for section, names in sorted(kept.items())},
        "security": document.get("security", []),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    raw = Path(argv[1]).read_bytes()
    part = extract(json.loads(raw), hashlib.sha256(raw).hexdigest())
    OUTPUT.write_text(json.dumps(part, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
