"""Where ckdemo's state and configuration come from: --home, --config, --module and env vars."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from .config import ha as ha_config
from .config.chrystoki import ChrystokiConf, ChrystokiSyntaxError
from .ha.pin_lock import DEFAULT_FAILED_LOGIN_LIMIT
from .provision import CKDEMO_SECTION, CONFIG_NAME, is_provisioned, provision

DEFAULT_HOME = ".ckdemo"
DEFAULT_HEDGE_FLOOR_S = 0.5  # MemberHedgeFloor: see member_hedge_floor()
DEFAULT_MEMBER_TIMEOUT_S = 20.0  # as Luna (docs/LUNA-HA.md): a command running over 20 s fails a member
MAX_MEMBER_TIMEOUT_S = 86400.0
ISOLATION_VALUES = ("copies", "none", "")  # LocalIsolation; "": each command's own default
# Script variables filled from the config when the environment does not set them.
SECRET_KEYS = {"CKDEMO_USER_PIN": "UserPIN", "CKDEMO_SO_PIN": "SOPIN"}


class SettingsError(Exception):
    """The configuration cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Settings:
    """The configuration, read once (load_settings) and handed down: nothing sets a field
    afterwards; a command that serves otherwise than the file says makes another value
    (overriding)."""

    home: Path
    config_path: Path
    conf: ChrystokiConf
    module_override: str | None = None
    balance: bool = True  # False: --nolb (CKDemo's nolb: HA calls go to the first active member)

    def libraries(self) -> list[str]:
        """PKCS#11 libraries to load, in order: --module, CKDemo LibraryNN, Luna's LibUNIX64."""
        if self.module_override:
            return [self.module_override]
        ours = self.conf.section(CKDEMO_SECTION)
        numbered = sorted((k for k in ours if re.fullmatch(r"Library\d+", k)), key=lambda k: int(k[7:]))
        paths = [ours[k] for k in numbered if ours[k]]
        if not paths:
            luna = self.conf.get("Chrystoki2", "LibUNIX64") or self.conf.get("Chrystoki2", "LibUNIX")
            paths = [luna] if luna else []
        return paths

    def member_labels(self) -> list[str]:
        value = self.conf.get(CKDEMO_SECTION, "Members") or ""
        return [label.strip() for label in value.split(",") if label.strip()]

    def member_serials(self) -> dict[str, str]:
        """Provisioned member labels -> token serials (to reach a member that is down)."""
        serials = [s.strip() for s in (self.conf.get(CKDEMO_SECTION, "MemberSerials") or "").split(",")]
        return {label: serial for label, serial in zip(self.member_labels(), serials) if serial}

    def member_timeout(self) -> float:
        """Seconds a remote member may take to answer before it counts as failed (0: no limit)."""
        return self._seconds("MemberTimeout", DEFAULT_MEMBER_TIMEOUT_S, "0 for no limit")

    def member_hedge_floor(self) -> float:
        """MemberHedgeFloor: the least a remote member's quick call waits before it is given up
        and moved to another member (its deadline is learnt from its answers); 0: off, every
        call waits MemberTimeout."""
        return self._seconds("MemberHedgeFloor", DEFAULT_HEDGE_FLOOR_S, "0 for off")

    def _seconds(self, key: str, default: float, zero: str) -> float:
        """A [CKDemo] setting in seconds, 0 to MAX_MEMBER_TIMEOUT_S; one line for anything else."""
        value = self.conf.get(CKDEMO_SECTION, key)
        if value is None:
            return default
        try:
            seconds = float(value)
        except ValueError:
            raise SettingsError(f"{CKDEMO_SECTION}.{key} = {value!r} is not a number") from None
        if not (math.isfinite(seconds) and 0 <= seconds <= MAX_MEMBER_TIMEOUT_S):
            raise SettingsError(
                f"{CKDEMO_SECTION}.{key} = {value!r} is out of range "
                f"(seconds, {zero}, at most {MAX_MEMBER_TIMEOUT_S:g})"
            )
        return seconds

    def failed_login_limit(self) -> int:
        """FailedLoginLimit: wrong user PINs in a row before the HA slot locks the PIN (0: never)."""
        value = self.conf.get(CKDEMO_SECTION, "FailedLoginLimit")
        if value is None:
            return DEFAULT_FAILED_LOGIN_LIMIT
        try:
            limit = int(value.strip())
        except ValueError:
            limit = -1
        if not 0 <= limit <= 1000:
            raise SettingsError(
                f"{CKDEMO_SECTION}.FailedLoginLimit = {value!r} is not a whole "
                "number from 0 (never lock) to 1000"
            )
        return limit

    def pin_lock_path(self, group_serial: str) -> Path:
        """The failed-login count of one HA group (ckdemo/ha/pin_lock.py)."""
        return self.home / "state" / f"pin-lock-{group_serial}.json"

    def journal_path(self, group_serial: str) -> Path:
        """The number of the HA group's last change, shared by every process (ha/journal.py)."""
        return self.home / "state" / f"journal-{group_serial}"

    def vault_dir(self, group_serial: str) -> Path:
        """What the HA group keeps of each token key (ckdemo/ha/vault.py)."""
        return self.home / "state" / f"vault-{group_serial}"

    def check(self) -> None:
        """Every number in the file is checked when it is read, used or not (one line, exit 2),
        so a wrong value never waits for the day a remote member or a failover needs it."""
        self.member_timeout()
        self.member_hedge_floor()
        self.failed_login_limit()
        self.isolation()
        try:
            ha_config.settings(self.conf)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

    def isolation(self) -> str:
        """LocalIsolation: "copies" (a private copy of the library per local member), "none" (all
        through one instance) or "" (not said: the command chooses; the menu shares, serve copies)."""
        value = (self.conf.get(CKDEMO_SECTION, "LocalIsolation") or "").strip().lower()
        if value not in ISOLATION_VALUES:
            raise SettingsError(
                f"{CKDEMO_SECTION}.LocalIsolation = {value!r} is not one of "
                f"{', '.join(v for v in ISOLATION_VALUES if v)}"
            )
        return value

    def overriding(self, section: str, key: str, value: str) -> "Settings":
        """These settings with one value other than the file's, for this process only (the file
        is not written, and this value's configuration is not changed)."""
        conf = ChrystokiConf.parse(self.conf.dumps(), str(self.config_path))
        conf.set(section, key, value)
        return replace(self, conf=conf)

    def isolated_as(self, isolated: bool) -> "Settings":
        """LocalIsolation for this process only."""
        return self.overriding(CKDEMO_SECTION, "LocalIsolation", "copies" if isolated else "none")

    def isolated_members(self) -> list[str]:
        """Local members loaded through a private copy of the library each (LocalIsolation)."""
        return self.member_labels() if self.isolation() == "copies" else []

    def remote_members(self) -> list[str]:
        value = self.conf.get(CKDEMO_SECTION, "RemoteMembers") or ""
        return [label.strip() for label in value.split(",") if label.strip()]

    def member_socket(self, label: str) -> tuple[Path, bool]:
        """The member's socket and whether ckdemo runs its server (False: attach only)."""
        explicit = self.conf.get(CKDEMO_SECTION, f"Socket_{label}")
        if explicit:
            return Path(explicit).expanduser(), False
        return self.home / "run" / f"{label}.sock", True

    def softhsm_conf(self) -> str | None:
        return self.conf.get(CKDEMO_SECTION, "SoftHSM2Conf")

    def secrets(self) -> dict[str, str]:
        """${NAME} values for scripts: any environment variable, and for the two PIN names the
        config's test PINs when the environment does not set them."""
        values = {}
        for name, key in SECRET_KEYS.items():
            value = self.conf.get(CKDEMO_SECTION, key)
            if value:
                values[name] = value
        values.update({k: v for k, v in os.environ.items() if v})
        return values

    def apply_environment(self) -> None:
        """SoftHSM2 reads SOFTHSM2_CONF at C_Initialize: set it before any library loads."""
        conf = self.softhsm_conf()
        if conf and not self.module_override:
            os.environ["SOFTHSM2_CONF"] = conf


def load_settings(
    home: str | Path | None = None,
    config: str | Path | None = None,
    module: str | None = None,
    auto_provision: bool = True,
    balance: bool = True,
) -> Settings:
    home_path = Path(home or os.environ.get("CKDEMO_HOME") or DEFAULT_HOME).expanduser()
    if config:
        config_path = Path(config).expanduser()
        if not config_path.exists():
            raise SettingsError(f"config file not found: {config_path}")
    else:
        config_path = home_path / CONFIG_NAME
        if not is_provisioned(home_path) and auto_provision and not module:
            provision(home_path)
    try:
        conf = ChrystokiConf.load(config_path) if config_path.exists() else ChrystokiConf.parse("")
    except ChrystokiSyntaxError as exc:
        raise SettingsError(str(exc)) from None
    except OSError as exc:
        raise SettingsError(f"cannot read config {config_path}: {exc.strerror}") from None
    settings = Settings(home_path.resolve(), config_path, conf, module, balance)
    settings.check()
    return settings
