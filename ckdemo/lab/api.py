"""The fault lab for an application's own tests, in Python: a served HA token and a handle to
inject faults into the application's calls and read what it did.

    from ckdemo.lab.api import FaultLab

    with FaultLab() as lab:                       # a fresh temporary home, served
        app = subprocess.run(["my-app"], env=lab.env)          # or load lab.module in-process
        lab.fault("C_Sign", error="CKR_DEVICE_ERROR", count=3)
        lab.restart_hsm()
        print(lab.calls())                        # every call since the lab started

`ckdemo serve` runs as a child process (the members' libraries stay out of the test process);
faults and the journal go over its control channel (JSON lines, docs/FAULTS.md). The pytest
plugin (ckdemo.lab.pytest_plugin) gives the same as the `fault_lab` fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..codes import ckr_name
from ..serve.control_client import ControlFailed, NoServer, control_path, request
from .journal import NOT_FAILURES

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
DEFAULT_USER_PIN, DEFAULT_SO_PIN = "1234", "5678"  # what a fresh home is made with


class LabFailed(Exception):
    """The lab could not start, or the server refused a request: one line."""


class FaultLab:
    """A served HA token with faults on demand. `home`: serve that ckdemo home (default: a fresh
    temporary one, removed at close); `ckdemo`: the command to run (default: this Python's)."""

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        ckdemo: list[str] | None = None,
        log: str | os.PathLike | None = None,
    ) -> None:
        self._temporary = None if home is not None else Path(tempfile.mkdtemp(prefix="ckdemo-lab-"))
        self.home = Path(home) if home is not None else self._temporary / "home"
        self._command = ckdemo or [sys.executable, "-m", "ckdemo"]
        self.socket = self.home / "run" / "ckdemo.sock"
        self.log_path = Path(log) if log else (self._temporary or self.home.parent) / "fault-lab-serve.log"
        self.module = ""  # p11-kit-client.so, as serve names it when it starts
        self.token_label = "ckdemo-ha"
        self.user_pin, self.so_pin = DEFAULT_USER_PIN, DEFAULT_SO_PIN
        self._process: subprocess.Popen | None = None
        self._read = 0

    # ---- life ----------------------------------------------------------------------------------
    def start(self) -> "FaultLab":
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CKDEMO_")}
        with open(self.log_path, "w") as output:
            self._process = subprocess.Popen(
                [*self._command, "--home", str(self.home), "serve"],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while "control channel" not in self.log_path.read_text(errors="replace"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise LabFailed(f"ckdemo serve did not start: {self.log_tail()}")
            time.sleep(0.02)
        if "no control channel" in self.log_path.read_text(errors="replace"):
            self.close()
            raise LabFailed(f"ckdemo serve has no control channel: {self.log_tail()}")
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("pkcs11-tool --module "):
                self.module = line.split()[2]
        self._ask("journal_start")
        return self

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:  # serve does this at its stop too; here as well in case it has to be killed
                request(control_path(self.home), "fault_clear")
            except (NoServer, ControlFailed):
                pass
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)

    def __enter__(self) -> "FaultLab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus where the application finds the token: what `ckdemo lab run` gives."""
        return {
            **os.environ,
            "P11_KIT_SERVER_ADDRESS": f"unix:path={self.socket}",
            "CKDEMO_P11_MODULE": self.module,
            "CKDEMO_TOKEN_LABEL": self.token_label,
            "CKDEMO_USER_PIN": self.user_pin,
        }

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---- faults --------------------------------------------------------------------------------
    def fault(self, calls: str | list[str] = "", **settings: Any) -> int:
        """Add a fault (the settings of `ckdemo fault add`: error, latency, jitter, hang, disconnect,
        corrupt, count, every, probability, seed, after, for_ (or "for"), connection); its id."""
        if "for_" in settings:
            settings["for"] = settings.pop("for_")
        reply = self._ask("fault_add", fault={"calls": calls, **settings})
        return reply["fault"]["id"]

    def faults(self) -> list[dict[str, Any]]:
        return self._ask("fault_list")["faults"]

    def clear(self, fault_id: int | None = None) -> None:
        """End every fault (or one); with no id also every member fault: no member is left
        hung, slowed or flapping."""
        self._ask("fault_clear", **({} if fault_id is None else {"id": fault_id}))

    def restart_hsm(self) -> None:
        self._ask("restart_hsm")

    def reset_library(self) -> None:
        self._ask("reset_library")

    def remove_token(self) -> None:
        self._ask("remove_token")

    def insert_token(self) -> None:
        self._ask("insert_token")

    def change_serial(self) -> None:
        self._ask("change_serial")

    def change_slot(self) -> None:
        """The token is in another slot from now on (slot ids kept from before are invalid)."""
        self._ask("change_slot")

    # ---- member faults (docs/FAULTS.md): `name` is a member's label, serial or number ----------
    def fail_member(self, name: str) -> None:
        self._ask("fail", member=name)

    def restore_member(self, name: str) -> None:
        self._ask("restore", member=name)

    def kill_member(self, name: str) -> str:
        """A remote member's server killed (SIGKILL); a member served in serve's process failed
        in its HA group. restore_member brings either back. The member's state: "down"."""
        return self._ask("member_kill", member=name)["state"]

    def restart_member(self, name: str) -> str:
        return self._ask("member_restart", member=name)["state"]

    def hang_member(self, name: str) -> str:
        """A remote member's server stopped (SIGSTOP) until resume_member or clear; refused for a
        member served in serve's process."""
        return self._ask("member_hang", member=name)["state"]

    def resume_member(self, name: str) -> str:
        return self._ask("member_resume", member=name)["state"]

    def slow_member(self, name: str, ms: float, for_: float | None = None) -> str:
        """A remote member's answers up to `ms` late (its server stopped ms at a time), for
        `for_` seconds or until stop_member / clear."""
        return self._ask("member_slow", member=name, ms=ms, **_given(for_=for_))["state"]

    def flap_member(
        self, name: str, every: float, down: float | None = None, for_: float | None = None
    ) -> str:
        """Down `down` seconds (default: half of `every`) and up again, every `every` seconds, for
        `for_` seconds or until stop_member / clear."""
        return self._ask("member_flap", member=name, every=every, **_given(down=down, for_=for_))["state"]

    def stop_member(self, name: str) -> list[dict[str, Any]]:
        """End a slow or flap (the member is left running and up); what ended (`cycles`: the
        stops or downs it made), [] when none went on."""
        return self._ask("member_stop", member=name)["stopped"]

    def members(self) -> list[dict[str, Any]]:
        """The members of the served HA group(s), as HA Status sees them: `label`, `serial`,
        `status` (CKR name), `standby`, `recovery_exhausted`, `calls` (calls it has served)."""
        return [m for group in self._ask("status")["groups"] for m in group["members"]]

    def member_faults(self) -> list[dict[str, Any]]:
        """The member faults going on: slow, flap, hang (`member`, `action`, `ms`, `every_s`, ...)."""
        return self._ask("fault_list")["members"]

    # ---- what the application did --------------------------------------------------------------
    def calls(self, new_only: bool = False) -> list[dict[str, Any]]:
        """The calls applications made since the lab started (`new_only`: since the last read):
        {"seq", "connection", "call", "ms", "fault", "result"} each."""
        found, after = [], (self._read if new_only else 0)
        while True:
            reply = self._ask("journal_read", after=after)
            found += reply["calls"]
            if not reply["calls"] or reply["next"] == after:
                break
            after = reply["next"]
        self._read = after
        return found

    def failures(self, new_only: bool = False) -> list[dict[str, Any]]:
        """The calls that did not answer CKR_OK (size answers and CKR_USER_ALREADY_LOGGED_IN are
        answers, not failures: see ckdemo.lab.journal)."""
        answers = {ckr_name(code) for code in NOT_FAILURES}
        return [c for c in self.calls(new_only) if c["result"] not in answers]

    def _ask(self, command: str, **arguments: Any) -> dict[str, Any]:
        try:
            return request(control_path(self.home), command, **arguments)
        except (NoServer, ControlFailed) as error:
            raise LabFailed(f"{command}: {error}") from None


def _given(**settings: Any) -> dict[str, Any]:
    """The settings given (not None), by their JSON names (`for_` is "for")."""
    return {name.rstrip("_"): value for name, value in settings.items() if value is not None}
