"""pytest fixtures for an application's own tests against the fault lab (registered as the
pytest plugin `ckdemo` when ckdemo is installed; or `pytest -p ckdemo.lab.pytest_plugin`).

    def test_my_signer_survives_device_errors(fault_lab):
        fault_lab.fault("C_Sign", error="CKR_DEVICE_ERROR", count=3)
        done = subprocess.run(["my-signer", "--module", fault_lab.module], env=fault_lab.env)
        assert done.returncode == 0
        assert len([c for c in fault_lab.failures(new_only=True) if c["call"] == "C_Sign"]) == 3

`fault_lab_server` (one per test module) serves a fresh temporary HA token, or the ckdemo home
`fault_lab_home` names (override that fixture, module-scoped, e.g. with a home made by `ckdemo
init --remote` for members that can be killed, hung and slowed for real); `fault_lab` hands it to
one test, and after it clears every fault and member fault (no member is left hung, slowed or
flapping) and reads the journal past that test's calls.
"""

from __future__ import annotations

import pytest

from .api import FaultLab


@pytest.fixture(scope="module")
def fault_lab_home():
    """The ckdemo home to serve; None: a fresh temporary one (members in serve's process)."""
    return None


@pytest.fixture(scope="module")
def fault_lab_server(fault_lab_home):
    with FaultLab(home=fault_lab_home) as lab:
        yield lab


@pytest.fixture
def fault_lab(fault_lab_server):
    fault_lab_server.calls(new_only=True)  # what earlier tests did is not this one's
    yield fault_lab_server
    fault_lab_server.clear()
