"""Write stream_mmsa/schemas/event.schema.json from events.json_schema().

The published file is what clients validate against; tests/test_events.py fails when it
drifts from the models, and this script is the one way to bring it back in line.
"""

from __future__ import annotations

import json
from pathlib import Path

from stream_mmsa.events import json_schema

TARGET = Path(__file__).resolve().parents[1] / "stream_mmsa" / "schemas" / "event.schema.json"


def main() -> None:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
