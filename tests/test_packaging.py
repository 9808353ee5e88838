"""ckdemo as a user installs it: `pip install .` into a fresh virtual environment, then
`ckdemo scripts` and `ckdemo run token-tour` from another folder, with nothing of the repository
on the path. The wheel is built from a copy of the sources (nothing is written into the tree)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import clean_env, no_traceback, requires_softhsm
from support import REPO

pytestmark = requires_softhsm

SHIPPED = {"crypto-tour", "ha-failover-demo", "ha-remote-demo", "keys-tour", "negative-cases", "token-tour"}
BUILD_S = 300


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    shutil.copy(REPO / "LICENSE", source)  # pyproject's license-files
    shutil.copytree(REPO / "ckdemo", source / "ckdemo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = out.glob("ckdemo-*.whl")
    return built


def test_the_wheel_carries_the_shipped_scripts(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("ckdemo/scripts_data/")}
    assert shipped == SHIPPED
    # the repository's tools stay out of the wheel
    assert not any(Path(n).name in ("fuzz", "bootstrap", "bench-serve-client") for n in names)


def test_the_wheel_says_its_license_as_an_spdx_expression_and_carries_the_text(wheel):
    """PEP 639 (setuptools 77+): License-Expression, the LICENSE file in the wheel, no license
    classifier beside it (tools warn about the pair)."""
    archive = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    text = archive.read(metadata).decode()
    assert "\nLicense-Expression: Apache-2.0\n" in text
    assert "Classifier: License ::" not in text
    (license_file,) = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert b"Apache License" in archive.read(license_file)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel pip-installed; its dependencies (python-pkcs11, click, tabulate)
    are borrowed from this test's environment through a .pth line, so no registry is needed."""
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    # a plain path line: this environment's .pth files (the editable ckdemo) are not run from it
    (Path(site) / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env_dir


def test_pip_installed_ckdemo_runs_a_shipped_script_by_name(installed, tmp_path):
    ckdemo = installed / "bin" / "ckdemo"
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import ckdemo; print(ckdemo.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr  # not the repository

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listing = subprocess.run(
        [str(ckdemo), "scripts"], capture_output=True, text=True, timeout=60, cwd=elsewhere, env=clean_env()
    )
    assert listing.returncode == 0, listing.stderr
    rows = dict(line.split(None, 1) for line in listing.stdout.splitlines()[: len(SHIPPED)])
    assert set(rows) == SHIPPED
    assert rows["token-tour"].startswith("Token tour: the slot list")

    home = tmp_path / "home"
    done = subprocess.run(
        [str(ckdemo), "--home", str(home), "run", "token-tour"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=elsewhere,
        env=clean_env(),
    )
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert done.stdout.rstrip().endswith("Replay: 10 steps, 10 met their expectation, 0 did not")
    assert list(elsewhere.iterdir()) == []  # the default home was not used: --home was


def test_a_local_file_wins_over_a_shipped_name(run_ckdemo, shared_home, tmp_path):
    (tmp_path / "token-tour").write_text("# mine\n14\n0\n")
    done = run_ckdemo(shared_home, "run", "token-tour", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("Replay: 1 steps, 1 met their expectation, 0 did not")


def test_an_unknown_name_says_where_it_looked(run_ckdemo, shared_home, tmp_path):
    done = run_ckdemo(shared_home, "run", "token-tuor", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "ckdemo: script not found: token-tuor (neither a file here nor a shipped "
        "script: `ckdemo scripts` lists them)\n"
    )


def test_scripts_name_prints_the_shipped_script(run_ckdemo, shared_home):
    done = run_ckdemo(shared_home, "scripts", "ha-failover-demo")
    assert done.returncode == 0
    assert done.stdout == (REPO / "ckdemo" / "scripts_data" / "ha-failover-demo").read_text()
    assert (REPO / "scripts" / "ha-failover-demo").read_text() == done.stdout  # the repository's link
    missing = run_ckdemo(shared_home, "scripts", "nope")
    assert missing.returncode == 2
    assert missing.stderr.startswith("ckdemo: no shipped script 'nope' (shipped: crypto-tour, ")
