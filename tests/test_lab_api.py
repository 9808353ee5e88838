"""The fault lab from Python (ckdemo.lab.api.FaultLab) and as a pytest plugin (the `fault_lab`
fixture, which pip registers under the entry point pytest11), as an application team uses them:
their application is tests/apps/sign_loop.py (python-pkcs11 through p11-kit-client.so)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import clean_env, no_traceback, requires_softhsm
from rpc_capture import tools_missing

from ckdemo.lab.api import FaultLab, LabFailed

pytestmark = [requires_softhsm, pytest.mark.skipif(bool(tools_missing()), reason=str(tools_missing()))]

APP = Path(__file__).parent / "apps" / "sign_loop.py"


def sign(lab: FaultLab, count: int, *options: str) -> tuple[int, list[dict]]:
    done = subprocess.run(
        [sys.executable, str(APP), lab.module, lab.token_label, lab.user_pin, str(count), *options],
        env=lab.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    no_traceback(done.stdout, done.stderr)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def test_the_api_serves_a_token_injects_faults_and_tells_what_the_application_did():
    with FaultLab() as lab:
        home = lab.home
        assert lab.module.endswith("p11-kit-client.so")
        fault = lab.fault("C_Sign", error="CKR_DEVICE_ERROR", count=2)
        code, lines = sign(lab, 4)
        assert code == 1 and [line["ok"] for line in lines] == [False, False, True, True]
        failures = lab.failures()
        assert [(c["call"], c["result"], c["fault"]) for c in failures] == [
            ("C_Sign", "CKR_DEVICE_ERROR", "CKR_DEVICE_ERROR")
        ] * 2
        assert lab.faults()[0]["id"] == fault and lab.faults()[0]["injected"] == 2
        lab.clear()
        assert lab.faults() == []
        code, _ = sign(lab, 2)
        assert code == 0 and lab.failures(new_only=True) == []
        with pytest.raises(LabFailed, match="unknown call 'C_Sgn'"):
            lab.fault("C_Sgn", error="CKR_DEVICE_ERROR")
    assert not home.exists(), "the temporary home outlived the lab"


def test_the_pytest_plugin_gives_an_application_suite_its_fixture(tmp_path):
    """A separate pytest run, as an application team's suite: only the installed plugin."""
    suite = tmp_path / "test_my_app.py"
    suite.write_text(
        textwrap.dedent(f"""
        import json, subprocess, sys

        def sign(lab, count):
            done = subprocess.run([sys.executable, {str(APP)!r}, lab.module, lab.token_label,
                                   lab.user_pin, str(count)], env=lab.env, capture_output=True, text=True)
            return [json.loads(line)["ok"] for line in done.stdout.splitlines()]

        def test_three_device_errors(fault_lab):
            fault_lab.fault("C_Sign", error="CKR_DEVICE_ERROR", count=3)
            assert sign(fault_lab, 5) == [False] * 3 + [True] * 2
            assert len(fault_lab.failures(new_only=True)) == 3

        def test_the_next_test_starts_clean(fault_lab):
            assert fault_lab.faults() == []
            assert sign(fault_lab, 2) == [True, True]
            assert fault_lab.failures(new_only=True) == []
    """)
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
