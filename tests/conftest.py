"""Shared set-up for the CLI-level tests: a real `ckdemo` in a subprocess, real SoftHSM2 tokens in
a private state folder, and pkcs11-tool as the independent client that reads token state back.

The CLI always runs as a subprocess: python-pkcs11 keeps one loaded library per path and SoftHSM2
reads SOFTHSM2_CONF only at C_Initialize, so one process per run is the only honest isolation.
"""

from __future__ import annotations

import os
import signal
import re
import shutil
import subprocess
import sys
from pathlib import Path
from textwrap import dedent
from typing import Callable

import pytest

SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN, SO_PIN = "1234", "5678"  # ckdemo's documented defaults (ckdemo/provision.py)
MEMBERS = ("member1", "member2", "member3")
TIMEOUT_S = 120


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without what a developer's shell may carry to point ckdemo or SoftHSM elsewhere
    (CKDEMO_HOME, CKDEMO_MODULE, CKDEMO_USER_PIN, ..., SOFTHSM2_CONF), plus `extra`. COLUMNS and
    LINES go too: they would override a pseudo-terminal's size (pytest-xdist workers carry
    COLUMNS=80, which cut the progress lines the terminal tests read)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CKDEMO_") and k not in ("SOFTHSM2_CONF", "COLUMNS", "LINES")
    }
    env.update(extra)
    return env


def softhsm_env(home: Path) -> dict[str, str]:
    """The environment under which SoftHSM2 sees exactly the tokens of one ckdemo home."""
    return clean_env(SOFTHSM2_CONF=str(Path(home) / "softhsm2.conf"))


def assert_pins_hidden(text: str, *pins: str) -> None:
    """No PIN appears as a word of its own (a hex serial may contain '1234'); masks do appear."""
    for pin in pins:
        found = re.search(rf"(?<![0-9A-Za-z]){re.escape(pin)}(?![0-9A-Za-z])", text)
        assert found is None, (
            f"PIN {pin!r} visible: ...{text[max(0, found.start() - 80) : found.end() + 20]!r}"
        )
    assert "****" in text


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


def pytest_configure(config) -> None:
    """The ckdemo package byte-compiled once per run, where Python keeps it (__pycache__, which
    git ignores and test_packaging leaves out). A run starts ~900 ckdemo processes; with
    PYTHONDONTWRITEBYTECODE=1 in the environment each compiled most of its modules from source
    again, ~60 ms of CPU a process (a quarter of a `ckdemo run`); ckdemo's own token set-up child
    (`python -I`) writes its modules' bytecode there whatever the environment says. Python checks
    every .pyc against its source, so an edited module is compiled again."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the controller (or the one process) did it
        return
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("ckdemo")
    for folder in spec.submodule_search_locations if spec else []:
        compileall.compile_dir(folder, quiet=2)


# ---------------------------------------------------------------- parallel runs (pytest-xdist)
# `make test` runs the suite on several workers with `--dist loadfile`: a module's tests run in
# order on one worker, so a module-scoped fixture (a provisioned home, a server) is made once and
# tests that build on an earlier test's objects (test_serve.py, test_serve_clients.py) keep their
# order. These modules hold a test of 10 s or more (serial, 2 cores) that no worker can share:
# they start first, so that none of them starts last and leaves the other workers idle at the end.
LONGEST_FIRST = (
    "test_fuzz.py",
    "test_hostile_serve.py",
    "test_remote.py",
    "test_difftest.py",
    "test_bad_input_sweep.py",
    "test_crash_consistency.py",
    "test_interrupt.py",
)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile with the modules of LONGEST_FIRST first, then the others, most tests first
    (xdist's own order for loadfile); other --dist modes are xdist's."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    def rank(module: str, tests: int) -> tuple[int, int]:
        name = Path(module).name
        return (LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST), -tests)

    class LongestFirst(LoadFileScheduling):
        def _assign_work_unit(self, node) -> None:
            # the queue of modules is complete when the first one is handed out: reorder it once
            if not getattr(self, "_ordered", False):
                ordered = sorted(self.workqueue.items(), key=lambda unit: rank(unit[0], len(unit[1])))
                self.workqueue.clear()
                self.workqueue.update(ordered)
                self._ordered = True
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


requires_softhsm = pytest.mark.skipif(
    not (os.path.exists(SOFTHSM_LIB) and shutil.which("softhsm2-util") and shutil.which("pkcs11-tool")),
    reason="SoftHSM2 (libsofthsm2.so, softhsm2-util) or OpenSC pkcs11-tool is not installed",
)
# CLI test modules: `from conftest import requires_softhsm` then `pytestmark = requires_softhsm`.


@pytest.fixture(scope="session")
def ckdemo_bin() -> Path:
    path = Path(sys.executable).parent / "ckdemo"
    assert path.exists(), f"{path} missing: pip install -e .[test] in this virtual environment"
    return path


@pytest.fixture(scope="session")
def run_ckdemo(ckdemo_bin) -> Callable[..., subprocess.CompletedProcess]:
    """run_ckdemo(home, *args, input=None, env=None, cwd=None): `ckdemo --home HOME ARGS...`.

    home=None leaves --home out (to test CKDEMO_HOME); env adds variables to a clean environment.
    """

    def run(
        home: Path | None,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        command = [str(ckdemo_bin)] + (["--home", str(home)] if home is not None else []) + list(args)
        return subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=clean_env(**(env or {})),
            cwd=cwd or _existing_parent(home),
        )

    return run


def _existing_parent(home: Path | None) -> Path | None:
    """Run next to the home, so a stray default ./.ckdemo would land in the test's tmp folder."""
    if home is None:
        return None
    return next(p for p in Path(home).parents if p.is_dir())


@pytest.fixture(scope="session")
def menu(run_ckdemo) -> Callable[..., tuple[int, str]]:
    """menu(home, *script_parts) -> (exit code, transcript): the parts, each dedented, typed into
    `ckdemo --home HOME run -`; never a traceback."""

    def replay(home: Path, *parts: str) -> tuple[int, str]:
        done = run_ckdemo(home, "run", "-", input="".join(dedent(part) for part in parts))
        no_traceback(done.stdout, done.stderr)
        return done.returncode, done.stdout

    return replay


def provisioner(run_ckdemo, templates: Path | None = None) -> Callable[..., Path]:
    """provision(home, *init_args) -> HOME as `ckdemo --home HOME init ARGS...` leaves it (checked).

    With a `templates` folder, init runs once per distinct ARGS, into a template home there, and
    each new HOME is a copy of that template: `init` costs ~0.4 s of CPU (two PKCS#11 child
    processes: token set-up, then HA Init), a copy a few milliseconds. The copies differ from homes
    made by init only in sharing token serials and domain keys with the other copies of this run
    (each home still has its own token folder and config). A HOME that exists already gets a real
    init: re-provisioning is what such a test looks at. Without `templates` (scripts/difftest),
    every call runs init. `ckdemo init` itself is tested with real runs (test_init.py, test_cli.py).
    """
    made: dict[tuple[str, ...], Path] = {}

    def init(home: Path, *args: str) -> Path:
        done = run_ckdemo(home, "init", *args)
        assert done.returncode == 0, done.stderr
        return home

    def make(home: Path, *args: str) -> Path:
        home = Path(home)
        if templates is None or home.exists() or home.is_symlink():
            return init(home, *args)
        if args not in made:
            made[args] = init(templates / f"home{len(made)}", *args)
        copy_home(made[args], home)
        return home

    return make


HOME_PATH_FILES = ("Chrystoki.conf", "softhsm2.conf")  # the only files of a new home that name it


def copy_home(template: Path, home: Path) -> None:
    """A copy of a home just made by init, pointed at its new place (mode 0700 kept)."""
    shutil.copytree(template, home, symlinks=True)
    old, new = str(template.resolve()), str(home.resolve())
    for name in HOME_PATH_FILES:
        path = home / name
        text = path.read_text()
        assert text.count(old) == 1, (
            f"{name} no longer names its home once: a template copy would be wrong:\n{text}"
        )
        path.write_text(text.replace(old, new))


@pytest.fixture(scope="session")
def provision(run_ckdemo, tmp_path_factory) -> Callable[..., Path]:
    """provision(home, *init_args): HOME as `ckdemo --home HOME init ...` leaves it; returns HOME
    (a copy of a template home made by that init once per session: see provisioner)."""
    return provisioner(run_ckdemo, tmp_path_factory.mktemp("templates"))


@pytest.fixture
def home(tmp_path, provision) -> Path:
    """A fresh provisioned home for a test that changes token state."""
    return provision(tmp_path / "home")


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory, provision) -> Path:
    """One provisioned home per module, for tests that only read token state (or restore it)."""
    return provision(tmp_path_factory.mktemp("shared") / "home")


@pytest.fixture(scope="session")
def independent() -> Callable[..., subprocess.CompletedProcess]:
    """independent(home, *args): pkcs11-tool on SoftHSM2 with that home's tokens, not checked."""

    def run(home: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["pkcs11-tool", "--module", SOFTHSM_LIB, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=softhsm_env(home),
        )

    return run


def servers_of(home: Path) -> list[int]:
    """pids of p11-kit servers serving this home's sockets (whoever started them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(home / "run").encode() in cmdline and b"pkcs11:token=" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def remote_home(tmp_path, provision, run_ckdemo):
    """A home whose members are p11-kit server processes (`init --remote`), all stopped after."""
    home = provision(tmp_path / "home", "--remote")
    yield home
    for log in sorted((home / "run").glob("*.log")) if (home / "run").is_dir() else []:
        print(f"--- {log.name} (shown when the test failed):\n{log.read_text(errors='replace')[-3000:]}")
    run_ckdemo(home, "member", "kill", "all")
    for pid in servers_of(home):  # whatever a failed test left behind
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def served(tmp_path_factory, provision, ckdemo_bin):
    """One `ckdemo serve` per module, for tests that make only objects of their own (unique
    labels); modules that need a server of another kind define their own `served`."""
    from test_serve import start_server, stop_cleanly

    folder = tmp_path_factory.mktemp("served")
    server = start_server(ckdemo_bin, provision(folder / "home"), None, folder / "serve.log")
    yield server
    stop_cleanly(server)
