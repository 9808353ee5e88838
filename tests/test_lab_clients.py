"""The fault lab with applications nobody here wrote, as `ckdemo lab run` drives them: Java's
SunPKCS11 provider, OpenSSL's pkcs11 engine, pkcs11-tool (all through Debian's
p11-kit-client.so). The report must say what each saw; the applications' own output agrees."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_env, no_traceback, requires_softhsm
from rpc_capture import tools_missing

from ckdemo.libraries import OPENSSL_PKCS11_ENGINE, P11KIT_CLIENT, Library, LibraryNotFound, find

pytestmark = [requires_softhsm, pytest.mark.skipif(bool(tools_missing()), reason=str(tools_missing()))]

APPS = Path(__file__).parent / "apps"


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory, provision):
    return provision(tmp_path_factory.mktemp("lab-clients") / "home")


def lab_run(
    home: Path, folder: Path, scenario: str, *command: str
) -> tuple[subprocess.CompletedProcess, dict]:
    (folder / "scenario.toml").write_text(scenario)
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ckdemo"),
            "--home",
            str(home),
            "lab",
            "run",
            str(folder / "scenario.toml"),
            "--report",
            str(folder / "r"),
            "--",
            *command,
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    no_traceback(done.stdout, done.stderr)
    report = folder / "r" / "report.json"
    return done, json.loads(report.read_text()) if report.exists() else {}


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java here")
def test_java_sunpkcs11_under_three_device_errors_on_c_sign(lab_home, tmp_path):
    done, report = lab_run(
        lab_home,
        tmp_path,
        """
timeout = 120
[[step]]
name = "three device errors on C_Sign"
after_calls = 60
fault = { calls = "C_Sign", error = "CKR_DEVICE_ERROR", count = 3 }
expect = { app_failures = 3, app_recovers_within = 5.0 }
""",
        "java",
        str(APPS / "JavaSigner.java"),
        "30",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    step = report["steps"][0]
    assert step["failures"] == {"CKR_DEVICE_ERROR": 3} and "gave up" not in step["reactions"]
    app = (tmp_path / "r" / "app.log").read_text().splitlines()
    failed = [line for line in app if "FAILED" in line]
    assert len(failed) == 3 and all("CKR_DEVICE_ERROR" in line for line in failed), app
    assert app[-1] == "29 OK"  # it signed again after the errors, and to the end


def installed(library: Library) -> str | None:
    try:
        return find(library)
    except LibraryNotFound:
        return None


@pytest.mark.skipif(
    installed(OPENSSL_PKCS11_ENGINE) is None, reason="no OpenSSL pkcs11 engine (libengine-pkcs11-openssl)"
)
def test_openssl_engine_under_200_ms_on_c_sign_shows_the_added_latency(lab_home, tmp_path):
    done, report = lab_run(
        lab_home,
        tmp_path,
        """
expect = { app_exit = 0, app_failures = 0 }
[[step]]
name = "200 ms on C_Sign"
at = 0.0
fault = { calls = "C_Sign", latency = 200 }
""",
        str(APPS / "openssl_loop.sh"),
        "3",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    signs = [c for c in report["call_log"] if c["call"] == "C_Sign"]
    assert len(signs) == 3 and all(c["fault"] == "+200 ms" and c["ms"] >= 200 for c in signs), signs
    assert report["steps"][0]["faulted_ms"] >= 200
    # 200 ms and what the call itself took (a signature computed ahead is the call's: it waited)
    assert re.search(r"a faulted call took 2\d\d\.\d ms", done.stdout), done.stdout


def test_pkcs11_tool_under_an_hsm_restart_in_the_middle_of_its_test(lab_home, tmp_path):
    """pkcs11-tool --test does not expect the token to reboot under it: the report shows the
    failure it saw and that it gave up (a non-zero exit)."""
    done, report = lab_run(
        lab_home,
        tmp_path,
        """
[[step]]
name = "appliance reboot"
after_calls = 25
event = "restart_hsm"
expect = { app_failures_max = 100 }
""",
        "pkcs11-tool",
        "--module",
        find(P11KIT_CLIENT),
        "--login",
        "--pin",
        "1234",
        "--test",
    )
    step = report["steps"][0]
    assert step["reached"] and step["failures"], (done.stdout, done.stderr)
    assert "CKR_SESSION_HANDLE_INVALID" in step["failures"] or "CKR_USER_NOT_LOGGED_IN" in step["failures"]
    assert report["app_exit"] != 0 and "gave up" in step["reactions"], step
