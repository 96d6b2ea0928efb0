"""README figures written by the commands that measure them, never by hand.

A command owns a block of the README between `<!-- NAME -->` and `<!-- /NAME -->` and
rewrites only that block; a README without the markers is left alone (a wheel install
has no README to keep current).
"""

from __future__ import annotations

import re
from pathlib import Path


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
