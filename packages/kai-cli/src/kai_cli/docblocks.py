"""The fenced code blocks of a markdown document, each with the heading it sits under, so that tests
can run every block of a guide (and notice a block nobody runs).

A block the tests cannot run is marked just above it with ``<!-- not run: REASON -->``; a console
block's commands that are not run (``pip install ...``) are named the same way:
``<!-- not run: pip install: it would change the environment the tests run in -->``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
_HEADING = re.compile(r"^(#{1,6}) (.+)$", re.M)
_NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")


@dataclass(frozen=True)
class Block:
    heading: str  #: the nearest heading above, as written (``### The test kit: ...``)
    index: int  #: 1 for the heading's first block, 2 for the next...
    language: str  #: ``python``, ``console``, ``text``..., or "" for a bare fence
    text: str
    line: int  #: where the fence opens (1-based)
    not_run: str | None  #: the reason given by a ``<!-- not run: ... -->`` comment just above

    @property
    def id(self) -> str:
        return f"{self.heading} #{self.index}"


def fenced_blocks(path: str | Path) -> list[Block]:
    """Every fenced block of the markdown file at ``path``, in order."""
    text = Path(path).read_text(encoding="utf-8")
    headings = [(m.start(), m.group(0)) for m in _HEADING.finditer(text)]
    blocks: list[Block] = []
    for m in _FENCE.finditer(text):
        # a '#' line inside an earlier block is not a heading
        heading = next((h for pos, h in reversed(headings) if pos < m.start() and not _inside(pos, blocks, text)), "")
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _NOT_RUN.search(before)
        index = 1 + sum(1 for b in blocks if b.heading == heading)
        blocks.append(Block(heading, index, m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1,
                            marker.group(1) if marker else None))
    return blocks


def _inside(pos: int, blocks: list[Block], text: str) -> bool:
    line = text.count("\n", 0, pos) + 1
    return any(b.line < line <= b.line + b.text.count("\n") for b in blocks)


@dataclass
class Command:
    line: str  #: the command as written, continuation lines joined
    expected: list[str]  #: the output shown under it ("..." stands for anything)


def console_commands(block: Block) -> list[Command]:
    """The ``$ ...`` commands of a console block, each with the output shown under it."""
    commands: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            cmd = line[2:]
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd[:-1].rstrip() + " " + lines[i].strip()
            commands.append(Command(cmd, []))
        elif commands:
            commands[-1].expected.append(line)
        i += 1
    return commands


def output_matches(expected: list[str], got: str) -> bool:
    """Whether ``got`` is the output shown, runs of spaces aside. ``...`` in a line stands for any
    text; a line starting with ``...`` stands for any number of lines."""
    pattern = ""
    for line in expected:
        if line.lstrip().startswith("..."):
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += re.escape(_squeeze(line)).replace(r"\.\.\.", ".*?") + r"\n"
    actual = "".join(_squeeze(ln) + "\n" for ln in got.splitlines())
    return re.fullmatch(pattern, actual) is not None


def _squeeze(line: str) -> str:
    return re.sub(r"\s+", " ", line).strip()


def run_console(block: Block) -> list[str]:
    """Run the ``kai-cli`` commands of a console block in the current directory, as a user would
    type them, and compare each output (stdout and stderr) with the one shown. ``echo $?`` shows the
    last exit code. Any other command must be named in the block's ``not run`` comment. Returns
    the differences, one string each (empty: the block runs as written)."""
    import shlex

    from click.testing import CliRunner

    from kai_cli.main import cli

    problems: list[str] = []
    skipped = (block.not_run or "").split(":", 1)[0].strip()
    code = 0
    for command in console_commands(block):
        words = shlex.split(command.line, comments=True)
        if words[:1] == ["kai-cli"]:
            result = CliRunner().invoke(cli, words[1:], catch_exceptions=False)
            code, got = result.exit_code, result.stdout + result.stderr
        elif words == ["echo", "$?"]:
            got = f"{code}\n"
        elif skipped and command.line.startswith(skipped):
            continue
        else:
            problems.append(f"{block.id}: {command.line!r} is neither kai-cli nor named in <!-- not run: ... -->")
            continue
        if command.expected and not output_matches(command.expected, got):
            problems.append(f"{block.id}: {command.line!r} printed:\n{got}")
        elif not command.expected and code != 0:
            problems.append(f"{block.id}: {command.line!r} exited {code}:\n{got}")
    return problems
