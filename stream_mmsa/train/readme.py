"""README figures written by the commands that measure them, never by hand.

A command owns a block of the README between `<!-- NAME -->` and `<!-- /NAME -->` and
rewrites only that block; a README without the markers is left alone (a wheel install
has no README to keep current).
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
"""The checkout's README (a wheel install has none: then nothing is written)."""


def publish(name: str, body: str, write: bool = True, readme: Path = README) -> None:
    """Print a command's figures and (`write`: its --readme) put them in README's `name`
    block, or say that it cannot."""
    print(body)
    if write and not write_block(readme, name, body):
        print(f"{readme} has no {name} block: nothing written")


def write_block(readme: Path, name: str, body: str) -> bool:
    """Replace the block's content with `body`; -> False when the README has no such block."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    pattern = re.compile(rf"(<!-- {re.escape(name)} -->\n).*?(<!-- /{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        return False
    readme.write_text(pattern.sub(lambda m: m[1] + body.rstrip("\n") + "\n" + m[2], text, count=1))
    return True
