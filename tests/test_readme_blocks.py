"""Commands rewrite only their own README block."""

from __future__ import annotations

from pathlib import Path

from stream_mmsa.train.readme import publish, write_block


def test_only_the_named_block_changes(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- a -->\nold a\n<!-- /a -->\nmiddle\n<!-- b -->\nold b\n<!-- /b -->\n"
    )
    assert write_block(readme, "a", "new a\nsecond line")
    assert readme.read_text() == (
        "intro\n<!-- a -->\nnew a\nsecond line\n<!-- /a -->\n"
        "middle\n<!-- b -->\nold b\n<!-- /b -->\n"
    )
    assert not write_block(readme, "c", "nothing")
    assert not write_block(tmp_path / "missing.md", "a", "x")


def test_publish_writes_the_block_or_says_it_cannot(tmp_path: Path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- a -->\nold\n<!-- /a -->\n")
    publish("a", "new\n", readme=readme)
    assert readme.read_text() == "<!-- a -->\nnew\n<!-- /a -->\n"
    publish("b", "x", readme=readme)
    assert "has no b block: nothing written" in capsys.readouterr().out
