"""The scripts ckdemo ships as package data (ckdemo/scripts_data/), so a `pip install`ed ckdemo can
run them by name: `ckdemo run token-tour`. The repository's scripts/ holds links to them."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent / "scripts_data"


def names() -> list[str]:
    return sorted(p.name for p in FOLDER.iterdir() if p.is_file() and not p.name.startswith("."))


def find(script: str) -> Path | None:
    """The shipped script called `script` (a name without a folder), or None."""
    if not script or "/" in script or script.startswith("."):
        return None
    path = FOLDER / script
    return path if path.is_file() else None


def summary(path: Path) -> str:
    """The script's first comment line, without its '#'."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def resolve(script: str) -> str:
    """A file that exists is used as given; otherwise a bare name is looked up among the shipped
    scripts. '-' (standard input) is left alone."""
    if script == "-" or Path(script).exists():
        return script
    shipped = find(script)
    return str(shipped) if shipped else script
