"""The embedded default: a private SoftHSM2 config and N member tokens in the state folder.

Never touches the system's SoftHSM2 tokens: every softhsm2-util call gets SOFTHSM2_CONF
pointing at the state folder's own config.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .config import ha as ha_config
from .config.chrystoki import ChrystokiConf

DEFAULT_MEMBERS = 3
DEFAULT_LABEL_PREFIX = "member"  # tokens member1, member2, ...
DEFAULT_USER_PIN = "1234"
DEFAULT_SO_PIN = "5678"
DEFAULT_GROUP_LABEL = "ckdemo-ha"  # the one HA group over all provisioned members
CONFIG_NAME = "Chrystoki.conf"  # Luna's client config syntax, so a Luna user recognises it
CKDEMO_SECTION = "CKDemo"  # our own keys, for what Luna's file has no key for

SOFTHSM_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


class ProvisionError(Exception):
    """Provisioning could not be done; the message is one line for the user."""


def softhsm_library() -> str:
    for path in SOFTHSM_CANDIDATES:
        if os.path.exists(path):
            return path
    raise ProvisionError("SoftHSM2 is not installed (no libsofthsm2.so); run scripts/bootstrap "
                         "or: apt-get install softhsm2")


@dataclass
class Provisioned:
    home: Path
    config_path: Path
    softhsm_conf: Path
    labels: list[str]


def member_labels(count: int, prefix: str = DEFAULT_LABEL_PREFIX) -> list[str]:
    return [f"{prefix}{n}" for n in range(1, count + 1)]


def is_provisioned(home: Path) -> bool:
    return (home / CONFIG_NAME).exists()


def _softhsm_util(conf: Path, *args: str) -> str:
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    try:
        done = subprocess.run(["softhsm2-util", *args], env=env, capture_output=True, text=True,
                              timeout=60)
    except FileNotFoundError:
        raise ProvisionError("softhsm2-util not found; run scripts/bootstrap or: apt-get install "
                             "softhsm2") from None
    if done.returncode != 0:
        # the arguments may hold PINs: report the action and the tool's message only
        raise ProvisionError(f"softhsm2-util {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def existing_tokens(conf: Path) -> dict[str, str]:
    """Initialised tokens as {label: serial}, read back with softhsm2-util."""
    tokens, serial = {}, ""
    for line in _softhsm_util(conf, "--show-slots").splitlines():
        name, _, value = line.strip().partition(":")
        if name == "Serial number":
            serial = value.strip()
        elif name == "Label" and value.strip():
            tokens[value.strip()] = serial
    return tokens


def provision(home: Path, members: int = DEFAULT_MEMBERS, force: bool = False,
              labels: list[str] | None = None, user_pin: str = DEFAULT_USER_PIN,
              so_pin: str = DEFAULT_SO_PIN, remote: bool | None = None,
              isolated: bool | None = None) -> Provisioned:
    """Create (or complete) the state folder: config, SoftHSM2 config and member tokens."""
    if members < 1:
        raise ProvisionError("--members must be at least 1")
    labels = labels or member_labels(members)
    library = softhsm_library()
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    tokens = home / "tokens"
    if force and tokens.exists():
        shutil.rmtree(tokens)
    tokens.mkdir(exist_ok=True)
    softhsm_conf = home / "softhsm2.conf"
    softhsm_conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                            "log.level = ERROR\nslots.removable = false\n")
    present = existing_tokens(softhsm_conf)
    for label in labels:
        if label not in present:
            _softhsm_util(softhsm_conf, "--init-token", "--free", "--label", label,
                          "--pin", user_pin, "--so-pin", so_pin)
    serials = existing_tokens(softhsm_conf)

    config_path = home / CONFIG_NAME
    conf = ChrystokiConf.load(config_path) if config_path.exists() and not force else ChrystokiConf.parse("")
    conf.set(CKDEMO_SECTION, "Library00", library)
    conf.set(CKDEMO_SECTION, "SoftHSM2Conf", str(softhsm_conf))
    conf.set(CKDEMO_SECTION, "Members", ",".join(labels))
    conf.set(CKDEMO_SECTION, "MemberSerials", ",".join(serials[label] for label in labels))
    if isolated is not None:  # a private library instance per local member (harness.py)
        if isolated:
            conf.set(CKDEMO_SECTION, "LocalIsolation", "copies")
        else:
            conf.remove(CKDEMO_SECTION, "LocalIsolation")
    if remote is not None:  # members served by p11-kit server processes (see members/remote.py)
        if remote:
            conf.set(CKDEMO_SECTION, "RemoteMembers", ",".join(labels))
        else:
            conf.remove(CKDEMO_SECTION, "RemoteMembers")
    # Default test-token PINs, kept in this 0700 folder only so unattended scripts can run;
    # replace them (ckdemo init --user-pin/--so-pin) before storing anything of value.
    conf.set(CKDEMO_SECTION, "UserPIN", user_pin)
    conf.set(CKDEMO_SECTION, "SOPIN", so_pin)
    if not ha_config.groups(conf):
        ha_config.set_group(conf, DEFAULT_GROUP_LABEL, [serials[label] for label in labels])
    conf.save(config_path)
    return Provisioned(home, config_path, softhsm_conf, labels)
