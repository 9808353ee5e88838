"""One version: pyproject.toml's, the one `ckdemo --version` prints (click reads the installed
package's metadata) and the top released section of CHANGELOG.md say the same
(docs/CONTRIBUTING.md, "Releasing")."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from click.testing import CliRunner

from support import REPO

from ckdemo.cli import main

RELEASED = re.compile(r"^## (\d+\.\d+\.\d+)(?: \((\d{4}-\d\d-\d\d)\))?$")


def pyproject_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def sections(changelog: str) -> list[str]:
    return [line for line in changelog.splitlines() if line.startswith("## ")]


def top_released(changelog: str) -> tuple[str, str | None]:
    """(version, date) of the first section after "Unreleased"; AssertionError when the sections
    are not "Unreleased" then released versions, newest first, each but the oldest dated."""
    headings = sections(changelog)
    assert headings and headings[0] == "## Unreleased", headings[:1]
    released = [RELEASED.match(heading) for heading in headings[1:]]
    assert released and all(released), headings
    versions = [tuple(int(part) for part in m.group(1).split(".")) for m in released]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions), headings
    assert all(m.group(2) for m in released[:-1]), "a released section without its date"
    return released[0].group(1), released[0].group(2)


def test_pyproject_the_cli_and_the_changelog_give_one_version():
    version = pyproject_version()
    installed = metadata.version("ckdemo")
    assert installed == version, "the installed metadata is older than pyproject.toml: scripts/bootstrap"
    printed = CliRunner().invoke(main, ["--version"])
    assert printed.exit_code == 0 and printed.output == f"ckdemo {version}\n", printed.output
    assert CliRunner().invoke(main, ["-V"]).output == printed.output
    assert top_released((REPO / "CHANGELOG.md").read_text())[0] == version


GOOD = "# Changelog\n\n## Unreleased\n\n- x\n\n## 0.3.0 (2026-12-08)\n\n- y\n\n## 0.2.0 (2026-12-07)\n\n## 0.1.0\n"


def test_the_top_released_section_is_read():
    assert top_released(GOOD) == ("0.3.0", "2026-12-08")


@pytest.mark.parametrize(
    "changelog",
    [
        GOOD.replace("## Unreleased\n", ""),  # no Unreleased section first
        GOOD.replace("## 0.3.0 (2026-12-08)", "## 0.1.5 (2026-12-08)"),  # not newest first
        GOOD.replace("## 0.3.0 (2026-12-08)", "## 0.3.0"),  # a release without its date
        GOOD.replace("## 0.3.0 (2026-12-08)", "## 0.3 (2026-12-08)"),  # not a version
        GOOD.replace("## 0.2.0 (2026-12-07)", "## 0.3.0 (2026-12-07)"),  # one version twice
    ],
)
def test_a_changelog_out_of_order_is_refused(changelog):
    with pytest.raises(AssertionError):
        top_released(changelog)
