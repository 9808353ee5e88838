"""README.md stays true: the blocks it marks runnable run on a fresh temporary home, what it shows
as their output is what they print, its command table names every subcommand, every relative
link in README.md and docs/*.md reaches a file of the repository, and none of them, nor a comment
or docstring of the Python sources, speaks of issues, sessions of work or branches: only of the
repository.

Marks, on a fenced block's opening line (```` ```sh runnable ````):
  sh runnable      run by `bash -e` in a fresh folder that is also HOME, with the `ckdemo` of this
                   virtual environment first on PATH; the blocks run in order, in one folder
  text file=NAME   written to NAME in that folder before any block runs
  text output      what the runnable block above it prints: its lines in order, where a line
                   starting with `...` stands for any lines; values that differ from run to run
                   (serials, slot ids, random bytes, JUnit times, host name) are compared as
                   placeholders
Only quick blocks are marked: all of them together must stay under RUNNABLE_BUDGET_S.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import clean_env, requires_softhsm
from support import REPO

from ckdemo.cli import main

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE_BUDGET_S = 20
ELISION = "..."
FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")
# values a run chooses: serials and other long hex words, 0x slot ids, JUnit's times and host
VARYING = [
    (re.compile(r'\b(time|timestamp|hostname)="[^"]*"'), r'\1="*"'),
    (re.compile(r"\b0x[0-9a-f]+"), "0x*"),
    (re.compile(r"\b[0-9a-f]{8,}\b"), "*"),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


@dataclass
class Block:
    language: str
    marks: str
    text: str
    line: int  # of the opening fence, 1-based


def blocks(markdown: str) -> list[Block]:
    found, opened, body = [], None, []
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = FENCE.match(line)
        if opened is None and fence:
            opened, body = Block(fence.group(1), fence.group(2), "", number), []
        elif opened is not None and line.rstrip() == "```":
            opened.text = "\n".join(body) + "\n"
            found.append(opened)
            opened = None
        elif opened is not None:
            body.append(line)
    assert opened is None, f"line {opened.line}: a fenced block is never closed"
    return found


def steady(line: str) -> str:
    for pattern, placeholder in VARYING:
        line = pattern.sub(placeholder, line)
    return line.rstrip()


def missing_from(shown: str, printed: str) -> str | None:
    """None when `printed` is what `shown` shows; else what does not match. Lines between two
    elisions must follow each other; without an elision at the start (end), the first (last) shown
    line is the first (last) printed one."""
    out = [steady(line) for line in printed.splitlines()]
    segments: list[list[str]] = [[]]
    for line in shown.splitlines():
        if line.startswith(ELISION):
            segments.append([])
        else:
            segments[-1].append(steady(line))
    at = 0
    for index, segment in enumerate(segments):
        if not segment:
            continue
        last = index == len(segments) - 1
        starts = [at] if index == 0 else range(at, len(out) - len(segment) + 1)
        match = next(
            (
                i
                for i in starts
                if out[i : i + len(segment)] == segment and (not last or i + len(segment) == len(out))
            ),
            None,
        )
        if match is None:
            return (
                f"not printed {'at the start' if index == 0 else 'after the lines before'}"
                f"{' and at the end' if last else ''}: {segment[0]!r} ... ({len(segment)} lines)"
            )
        at = match + len(segment)
    return None


def broken_links(page: Path, markdown: str) -> list[str]:
    """Relative links of `page` that reach no file, or a file outside the repository."""
    prose = "\n".join(line for line in _outside_fences(markdown))
    broken = []
    for target in LINK.findall(INLINE_CODE.sub("", prose)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or a place in the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or not path.is_relative_to(REPO):
            broken.append(target)
    return broken


def _outside_fences(markdown: str):
    inside = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside:
            yield line


# ---- the README's own blocks ------------------------------------------------------------------
@requires_softhsm
def test_the_runnable_blocks_run_on_a_fresh_home_and_print_what_the_readme_shows(tmp_path):
    found = blocks(README.read_text())
    runnable = [b for b in found if b.marks == "runnable"]
    outputs = [b for b in found if b.marks == "output"]
    assert runnable and outputs, "README.md marks no runnable block, or shows no output"
    for block in found:
        if block.marks.startswith("file="):
            (tmp_path / block.marks.removeprefix("file=")).write_text(block.text)
    env = clean_env(HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}:{clean_env()['PATH']}")
    printed: dict[int, str] = {}
    started = time.monotonic()
    for block in runnable:
        done = subprocess.run(
            ["bash", "-e", "-c", block.text],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUNNABLE_BUDGET_S,
        )
        assert done.returncode == 0, f"README.md:{block.line}: exit {done.returncode}\n{done.stderr}"
        printed[block.line] = done.stdout
    took = time.monotonic() - started
    assert took < RUNNABLE_BUDGET_S, f"the runnable blocks took {took:.1f} s: mark only quick ones"
    for block in outputs:
        above = [b for b in runnable if b.line < block.line]
        assert above, f"README.md:{block.line}: an output block with no runnable block above it"
        problem = missing_from(block.text, printed[above[-1].line])
        assert problem is None, f"README.md:{block.line}: {problem}"


def test_the_command_table_names_every_subcommand():
    text = README.read_text()
    table = text[text.index("\n## Commands\n") :]
    table = table[: table.index("\n## ", 1)]
    named = set(re.findall(r"^\| `ckdemo ([a-z-]+)", table, re.MULTILINE))
    assert named == set(main.commands)


def test_every_relative_link_reaches_a_file_of_the_repository():
    broken = {
        page.relative_to(REPO).as_posix(): links
        for page in PAGES
        if (links := broken_links(page, page.read_text()))
    }
    assert broken == {}


# what speaks of the work around the repository rather than of the repository: an issue or its
# owner, the shared notes beside the checkout, a session of work (numbered, ordinal or "this"
# one: a PKCS#11 session is "a session", "the second session)" of an application, "its last
# session", "C_OpenSession", never one of these), a git branch
ORDINAL = r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|previous|this)"
OUTSIDE = [
    re.compile(pattern)
    for pattern in (
        r"\b[Ii]ssues? #?\d+",
        r"\b[Tt]he issue(?:'s)?\b",
        r"\bissue owner",
        r"\.\./shared",
        r"(?<![.`\w])FACTS\b(?!`)",  # not the code's names (`vault.FACTS`, key_checks.FACTS)
        r"\d{4}-\d\d-\d\d, session \d+\b",
        r"\(session \d{1,2}\)",
        r"\brun of session \d+\b",
        r"\b[Ww]orking session",
        rf"\d{{4}}-\d\d-\d\d, (?:\w+ of the )?{ORDINAL} session\b",
        rf"\b(?:in|of|during) (?:the|this) {ORDINAL} session\b",
        rf"\b{ORDINAL} session's (?:last|first|fixes|code|work|run)",
        r"\b(?:start|end) of the session\b",
        r"\b(?:found|fixed) (?:in )?this session\b",
        r"\b(?:this|that|our|my|a|the|feature|main's) branch\b(?! of)",
        r"\bbranch `",
    )
]


def outside_references(text: str) -> list[str]:
    return [found.group(0) for pattern in OUTSIDE for found in pattern.finditer(text)]


def test_the_readme_refers_to_nothing_outside_the_repository():
    text = README.read_text()
    assert "the seed" not in text
    assert outside_references(text) == []


def test_the_docs_refer_to_nothing_outside_the_repository():
    found = {
        page.relative_to(REPO).as_posix(): refs
        for page in [*PAGES, REPO / "CHANGELOG.md"]
        if (refs := outside_references(page.read_text()))
    }
    assert found == {}


# the Python sources: what their comments and docstrings say. Names are code and never read
# (vault.FACTS, key_checks.FACTS and WRAPPING_FACTS are identifiers, not notes), nor are other
# strings: a program's output numbers PKCS#11 sessions.
PYTHON = [
    *sorted((REPO / "ckdemo").rglob("*.py")),
    *sorted((REPO / "tests").rglob("*.py")),
    *(
        p
        for p in sorted((REPO / "scripts").iterdir())
        if p.is_file() and p.read_text().startswith("#!/usr/bin/env python")
    ),
]
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a Python source."""
    source = path.read_text()
    docstrings = [
        (node.body[0].lineno, node.body[0].value.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, DOCUMENTED)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    ]
    comments = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    return docstrings + comments


def outside_references_in(path: Path) -> list[tuple[int, str]]:
    """(line, reference) for every reference outside the repository in `path`'s prose."""
    return sorted(
        (line + text.count("\n", 0, found.start()), found.group(0))
        for line, text in prose(path)
        for pattern in OUTSIDE
        for found in pattern.finditer(text)
    )


def test_the_python_sources_refer_to_nothing_outside_the_repository():
    assert len(PYTHON) > 100 and any(p.parent.name == "scripts" for p in PYTHON)
    found = [
        f"{path.relative_to(REPO).as_posix()}:{line}: {reference}"
        for path in PYTHON
        for line, reference in outside_references_in(path)
    ]
    assert not found, "outside the repository:\n" + "\n".join(found)


# ---- the checks themselves can fail -----------------------------------------------------------
PRINTED = "menu\nEnter your choice : 52\nHSM 8629ea5b9790bdb1 - CKR_OK\nStatus: CKR_OK\nbye\n"


@pytest.mark.parametrize(
    "shown",
    [
        "menu\n...\nHSM 0123456789abcdef - CKR_OK\nStatus: CKR_OK\n...\n",  # another serial
        "menu\n...\nbye\n",
        "menu\nEnter your choice : 52\nHSM 8629ea5b9790bdb1 - CKR_OK\nStatus: CKR_OK\nbye\n",
    ],
)
def test_output_that_was_printed_is_found(shown):
    assert missing_from(shown, PRINTED) is None


@pytest.mark.parametrize(
    "shown",
    [
        "menu\n...\nHSM 0123456789abcdef - CKR_DEVICE_ERROR\n...\n",  # another result
        "...\nStatus: CKR_OK\nEnter your choice : 52\n...\n",  # out of order
        "...\nEnter your choice : 52\nStatus: CKR_OK\n...\n",  # a line left out between
        "Enter your choice : 52\n...\n",  # not the first line printed
        "menu\n...\nStatus: CKR_OK\n",  # not the last line printed
    ],
)
def test_output_that_was_not_printed_is_reported(shown):
    assert missing_from(shown, PRINTED) is not None


@pytest.mark.parametrize(
    "text",
    [
        'Acceptance of the issue "the HA slot must be indistinguishable"',
        "### The journal (issue 20)",
        "for the issue owner to move",
        "see ../shared/notes.md",
        "as FACTS says",
        "SoftHSM 2.6 takes SHA-1 only (FACTS 6)",
        "| before (session 14) |",
        "### Predicted replies (2026-11-26, session 15)",
        "The six-minute run of session 14 (same command",
        "Runs of the fifth session (2026-12-07)",
        "(2026-12-07, third session, branch `diff-18`)",
        "(2026-12-07, end of the fifth session)",
        "the two defects of the fourth session's last run",
        "What was found and fixed this session",
        "Fixed in the fourth session, each",
        "| main b573707 and this branch started together |",
    ],
)
def test_a_reference_outside_the_repository_is_found(text):
    assert outside_references(text) != []


@pytest.mark.parametrize(
    "text",
    [
        "C_OpenSession opens a session; sessions close",
        "`s2` the second session) of the application",
        "after the last session closes; the handles of the last session; its last session,",
        "the same in every session; in the application's session",
        "Session handle: 1000001 (slot#5, R/W); C_Login on session 1000001; the objects of session 1",
        "Not an issue here: mechanisms",
        "the key's facts; the seed of `probability`",
        "what `vault.FACTS` lists; key_checks.FACTS; `FACTS` in ckdemo/ha/vault.py",
        "each branch of the failover",
        "(2026-12-07, later)",
    ],
)
def test_pkcs11_sessions_and_plain_words_are_not_taken_for_outside_references(text):
    assert outside_references(text) == []


def test_a_python_source_is_read_in_its_comments_and_docstrings_only(tmp_path):
    source = tmp_path / "module.py"
    source.write_text(
        '"""A module.\n\nAs issue 8 says."""\n'
        "from .vault import FACTS  # FACTS 6\n"
        "\n\n"
        "def f():\n"
        '    """See ../shared/notes.md."""\n'
        '    return "Logged out (session 1).", FACTS, vault.FACTS, key_checks.FACTS, WRAPPING_FACTS\n'
    )
    assert outside_references_in(source) == [(3, "issue 8"), (4, "FACTS"), (8, "../shared")]


def test_a_broken_or_outside_link_is_reported():
    page = REPO / "docs" / "HA.md"
    text = (
        "[ok](SECURITY.md) [anchor](#losing-every-member) [web](https://example.org/x.md)\n"
        "[gone](NOPE.md) [out](../../etc/passwd) `[code](NOPE2.md)`\n```\n[fenced](NOPE3.md)\n```\n"
    )
    assert broken_links(page, text) == ["NOPE.md", "../../etc/passwd"]


def test_blocks_read_marks_and_text():
    text = "x\n```sh runnable\nckdemo --version\n```\n```text file=a b\n1\n```\n"
    assert [(b.language, b.marks, b.text, b.line) for b in blocks(text)] == [
        ("sh", "runnable", "ckdemo --version\n", 2),
        ("text", "file=a b", "1\n", 5),
    ]
