"""How the command line says that something went wrong, in one place."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text


def print_error(console: Console, message: str) -> None:
    """One unwrapped `error: …` line (scripts grep it), the message taken literally: paths,
    sink names and transcripts hold `[ ]`, which rich markup would eat."""
    console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
