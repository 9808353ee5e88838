"""The embedded default: a private SoftHSM2 config and N member tokens in the state folder.

Never touches the system's SoftHSM2 tokens: every token call runs in a child process whose
SOFTHSM2_CONF points at the state folder's own config (or init's staging folder).

What `init` promises (docs/CONFIGURATION.md, "The state folder"):
- PINs never on a command line or in a child's environment: tokens are set up through PKCS#11
  in `python -m ckdemo.tokeninit`, PINs on its stdin (tokeninit.py).
- An existing home is not changed behind its tokens' back: another member list or PIN than the
  home was made with is refused without --force; --force removes only the token folders ckdemo
  recorded (MemberSerials), nothing else under tokens/.
- All or nothing: new tokens are made in a staging folder, then moved in, then the configs are
  replaced atomically (temp file, fsync, rename). A failure on the way (disk full, a folder that
  cannot be written) puts back what was there before, or leaves nothing on a new home.
- A folder ckdemo did not create is never chmod-ed: one that other users may enter is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import libraries
from .childenv import child_environment
from .config import ha as ha_config
from .config.chrystoki import ChrystokiConf, ChrystokiSyntaxError

DEFAULT_MEMBERS = 3
DEFAULT_LABEL_PREFIX = "member"  # tokens member1, member2, ...
DEFAULT_USER_PIN = "1234"
DEFAULT_SO_PIN = "5678"
DEFAULT_GROUP_LABEL = "ckdemo-ha"  # the one HA group over all provisioned members
CONFIG_NAME = "Chrystoki.conf"  # Luna's client config syntax, so a Luna user recognises it
CKDEMO_SECTION = "CKDemo"  # our own keys, for what Luna's file has no key for


class ProvisionError(Exception):
    """Provisioning could not be done; the message is one line for the user."""


def softhsm_library() -> str:
    try:
        return libraries.find(libraries.SOFTHSM2)
    except libraries.LibraryNotFound as missing:
        raise ProvisionError(str(missing)) from None


@dataclass
class Provisioned:
    home: Path
    config_path: Path
    softhsm_conf: Path
    labels: list[str]
    ha_init: list[str] = field(default_factory=list)  # what HA Init did on the new group


def member_labels(count: int, prefix: str = DEFAULT_LABEL_PREFIX) -> list[str]:
    return [f"{prefix}{n}" for n in range(1, count + 1)]


STAGING_PREFIX = ".init-"  # init makes new tokens in HOME/.init-<pid>/, then moves them in
HOME_MODE = 0o700
FILE_MODE = 0o600
TOKEN_TOOL_TIMEOUT_S = 120


def is_provisioned(home: Path) -> bool:
    return (home / CONFIG_NAME).exists()


# ---------------------------------------------------------------- the token child process


def _token_tool(conf: Path, request: dict) -> dict:
    """One request to `python -m ckdemo.tokeninit` under SOFTHSM2_CONF=conf: the PINs go on its
    stdin, its argv and environment hold none (tokeninit.py)."""
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-m", "ckdemo.tokeninit"],
            input=json.dumps(request),
            env=child_environment(SOFTHSM2_CONF=str(conf)),
            capture_output=True,
            text=True,
            timeout=TOKEN_TOOL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"token set-up did not finish within {TOKEN_TOOL_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise ProvisionError(f"token set-up failed: {reason}")
    return json.loads(done.stdout)


def existing_tokens(conf: Path, library: str | None = None) -> dict[str, str]:
    """Initialised tokens as {label: serial} under that SoftHSM2 config."""
    return _token_tool(conf, {"action": "list", "library": library or softhsm_library()})["tokens"]


def _softhsm_conf_text(tokens: Path) -> str:
    return (
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )


# ---------------------------------------------------------------- files and folders


def write_atomically(path: Path, text: str, mode: int = FILE_MODE) -> None:
    """A temporary file beside `path`, fsync, rename: a reader sees the old file or the new one,
    never a part (a full disk fails before the rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_home(home: Path) -> Path | None:
    """Creates the home (mode 0700) and returns the topmost folder created, to remove if init
    fails; None when the home existed. An existing folder keeps its mode: one that other users
    can enter is refused, never chmod-ed."""
    if home.exists() or home.is_symlink():
        if not home.is_dir():
            raise ProvisionError(f"{home} exists and is not a folder")
        mode = stat.S_IMODE(home.stat().st_mode)
        if mode & 0o077:
            raise ProvisionError(
                f"{home} is open to other users (mode {mode:04o}); ckdemo keeps PINs, tokens and "
                f"member sockets there and does not change a folder it did not create: "
                f"chmod 700 {home}, or name a new folder"
            )
        return None
    top = home
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    home.mkdir(parents=True, mode=HOME_MODE)
    os.chmod(home, HOME_MODE)  # ours: exactly 0700 whatever the umask
    return top


def _token_folder_serial(folder: Path) -> str | None:
    """The serial of a SoftHSM2 token folder: SoftHSM2 names it by a UUID that ends with the
    token serial, and its token.object holds the serial too; anything else is not a token."""
    name = folder.name.replace("-", "").lower()
    if (
        folder.is_symlink()
        or not folder.is_dir()
        or len(name) != 32
        or any(c not in "0123456789abcdef" for c in name)
    ):
        return None
    serial = name[-16:]
    try:
        if serial.encode() not in (folder / "token.object").read_bytes():
            return None
    except OSError:
        return None
    return serial


def _recorded_token_folders(tokens: Path, serials: set[str]) -> list[Path]:
    """Token folders of the tokens ckdemo recorded (by serial); other files stay untouched."""
    if not tokens.is_dir():
        return []
    return sorted(f for f in tokens.iterdir() if _token_folder_serial(f) in serials)


def _remove_stale_staging(home: Path) -> None:
    """Staging folders of an init that was killed: its tokens were never moved in."""
    for folder in home.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX) :]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def _load_config(path: Path) -> ChrystokiConf | None:
    if not path.exists():
        return None
    try:
        return ChrystokiConf.load(path)
    except ChrystokiSyntaxError as exc:
        raise ProvisionError(str(exc)) from None


def _listed(conf: ChrystokiConf | None, key: str) -> list[str]:
    value = (conf.get(CKDEMO_SECTION, key) if conf else None) or ""
    return [item.strip() for item in value.split(",") if item.strip()]


def _os_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"init failed, nothing changed: {where}{exc.strerror or exc}"


# ---------------------------------------------------------------- PINs


def _pin_to_store(
    value: str | None, previous: str | None, default: str, store_pins: bool | None
) -> str | None:
    """The PIN kept in Chrystoki.conf, or None. --store-pins: store it; --no-store-pins: never;
    neither: keep what was stored, and store a new PIN only if it is the public default."""
    if store_pins is False:
        return None
    if store_pins is True or previous is not None:
        return value or previous
    return value if value == default else None


def _check_pin(home: Path, live_conf: Path, library: str, label: str, kind: str, given: str | None) -> None:
    """A PIN given to init on an existing home must be the one its tokens have: init does not
    change PINs (the tokens would keep the old one and the config would lie)."""
    if given is None:
        return
    answer = _token_tool(
        live_conf,
        {
            "action": "verify",
            "library": library,
            "label": label,
            "user_pin": given if kind == "user" else None,
            "so_pin": given if kind == "so" else None,
        },
    )
    result = answer.get(kind)
    if result not in (None, "CKR_OK", "CKR_USER_ALREADY_LOGGED_IN"):
        name = "user PIN" if kind == "user" else "SO PIN"
        raise ProvisionError(
            f"{home} was initialised with another {name} ({label}: {result}); init does not change "
            f"PINs: give the current one, change it with menu choice 5 on every member, or run "
            f"init --force to make new tokens (every key on them is lost)"
        )


# ---------------------------------------------------------------- the HA group


def set_up_ha_group(conf: ChrystokiConf, labels: list[str], serials: dict[str, str]) -> None:
    """The HA group over the provisioned members, unless the config already has groups.

    Runs after the member tokens exist (in the staging folder or already in place) and before
    Chrystoki.conf is written, which is init's commit point: a step that must act on the tokens
    (e.g. creating a group domain key) belongs here or right after _commit, through a tokeninit
    child (PINs on its stdin), and must raise ProvisionError to make init put everything back."""
    if not ha_config.groups(conf):
        ha_config.set_group(conf, DEFAULT_GROUP_LABEL, [serials[label] for label in labels])


# ---------------------------------------------------------------- init


def provision(
    home: Path,
    members: int | None = None,
    force: bool = False,
    labels: list[str] | None = None,
    user_pin: str | None = None,
    so_pin: str | None = None,
    remote: bool | None = None,
    isolated: bool | None = None,
    store_pins: bool | None = None,
    label_prefix: str | None = None,
) -> Provisioned:
    """Create (or complete) the state folder: config, SoftHSM2 config and member tokens.

    members/labels/label_prefix and the PINs None: keep what the home has (defaults on a new
    home). All or nothing: see the module's docstring."""
    if members is not None and members < 1:
        raise ProvisionError("--members must be at least 1")
    library = softhsm_library()
    home = Path(home).expanduser().resolve()
    try:
        created = _make_home(home)
    except OSError as exc:
        raise ProvisionError(
            f"cannot create the state folder {exc.filename or home}: {exc.strerror or exc}"
        ) from None
    staging = home / f"{STAGING_PREFIX}{os.getpid()}"
    try:
        _remove_stale_staging(home)
        staging.mkdir(mode=HOME_MODE)
        return _provision(
            home,
            staging,
            library,
            members,
            force,
            labels,
            user_pin,
            so_pin,
            remote,
            isolated,
            store_pins,
            label_prefix,
        )
    except BaseException as exc:
        if created is not None:  # a new home: leave nothing behind
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ProvisionError(_os_message(exc)) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _provision(
    home: Path,
    staging: Path,
    library: str,
    members: int | None,
    force: bool,
    labels: list[str] | None,
    user_pin: str | None,
    so_pin: str | None,
    remote: bool | None,
    isolated: bool | None,
    store_pins: bool | None,
    label_prefix: str | None,
) -> Provisioned:
    config_path = home / CONFIG_NAME
    tokens = home / "tokens"
    old = _load_config(config_path)
    old_labels = _listed(old, "Members")
    if labels is None:
        if members is None and label_prefix is None and old_labels and not force:
            labels = old_labels
        else:
            labels = member_labels(members or DEFAULT_MEMBERS, label_prefix or DEFAULT_LABEL_PREFIX)
    if old is not None and old_labels and labels != old_labels and not force:
        raise ProvisionError(
            f"{home} has members {','.join(old_labels)}; init would make them "
            f"{','.join(labels)}: run init --force to make new tokens (every key on the old ones "
            f"is lost), or name another --home"
        )

    live_conf = staging / "live.conf"  # the home's own tokens, wherever softhsm2.conf points
    live_conf.write_text(_softhsm_conf_text(tokens))
    present = existing_tokens(live_conf, library) if tokens.is_dir() else {}
    stored_user = old.get(CKDEMO_SECTION, "UserPIN") if old else None
    stored_so = old.get(CKDEMO_SECTION, "SOPIN") if old else None

    remove: list[Path] = []
    if force:
        recorded = set(_listed(old, "MemberSerials")) | {present[l] for l in old_labels if l in present}
        remove = _recorded_token_folders(tokens, recorded)
        kept: dict[str, str] = {}
        strangers = [l for l in labels if l in present and present[l] not in recorded]
        if strangers:
            raise ProvisionError(
                f"{tokens} holds a token labelled {strangers[0]} that ckdemo did "
                "not record; init --force removes only its own tokens: move it "
                "away or choose another --label-prefix"
            )
        user, so = user_pin or DEFAULT_USER_PIN, so_pin or DEFAULT_SO_PIN
        stored_user = stored_so = None
    else:
        kept = {label: present[label] for label in labels if label in present}
        if kept:
            first = next(iter(kept))
            _check_pin(home, live_conf, library, first, "user", user_pin)
            _check_pin(home, live_conf, library, first, "so", so_pin)
        fallback_user = None if kept else DEFAULT_USER_PIN
        fallback_so = None if kept else DEFAULT_SO_PIN
        user = user_pin or stored_user or fallback_user
        so = so_pin or stored_so or fallback_so
    new_labels = [label for label in labels if label not in kept]
    if new_labels and (user is None or so is None):
        raise ProvisionError(
            f"new tokens ({','.join(new_labels)}) need the PINs of the others: "
            "set CKDEMO_USER_PIN and CKDEMO_SO_PIN (or --user-pin/--so-pin)"
        )

    made: dict[str, str] = {}
    if new_labels:
        (staging / "tokens").mkdir(mode=HOME_MODE)
        new_conf = staging / "new.conf"
        new_conf.write_text(_softhsm_conf_text(staging / "tokens"))
        made = _token_tool(
            new_conf,
            {"action": "create", "library": library, "labels": new_labels, "so_pin": so, "user_pin": user},
        )["tokens"]
    serials = {**kept, **made}

    conf = old if old is not None and not force else ChrystokiConf.parse("")
    softhsm_conf = home / "softhsm2.conf"
    conf.set(CKDEMO_SECTION, "Library00", library)
    conf.set(CKDEMO_SECTION, "SoftHSM2Conf", str(softhsm_conf))
    conf.set(CKDEMO_SECTION, "Members", ",".join(labels))
    conf.set(CKDEMO_SECTION, "MemberSerials", ",".join(serials[label] for label in labels))
    if isolated is not None:  # a private library instance per local member (harness.py)
        conf.set(CKDEMO_SECTION, "LocalIsolation", "copies" if isolated else "none")
    if remote is not None:  # members served by p11-kit server processes (see members/remote.py)
        if remote:
            conf.set(CKDEMO_SECTION, "RemoteMembers", ",".join(labels))
        else:
            conf.remove(CKDEMO_SECTION, "RemoteMembers")
    # The public default PINs are kept (0600 file in a 0700 folder) so unattended scripts run;
    # other PINs only with --store-pins, else scripts take them from CKDEMO_USER_PIN/CKDEMO_SO_PIN.
    for key, value, previous, default in (
        ("UserPIN", user, stored_user, DEFAULT_USER_PIN),
        ("SOPIN", so, stored_so, DEFAULT_SO_PIN),
    ):
        if store_pins is True and not (value or previous):
            raise ProvisionError(
                "--store-pins needs the PINs: set CKDEMO_USER_PIN and CKDEMO_SO_PIN (or --user-pin/--so-pin)"
            )
        keep = _pin_to_store(value, previous, default, store_pins)
        if keep is None:
            conf.remove(CKDEMO_SECTION, key)
        else:
            conf.set(CKDEMO_SECTION, key, keep)
    set_up_ha_group(conf, labels, serials)
    _commit(home, staging, remove, conf, config_path, softhsm_conf, tokens)
    return Provisioned(
        home, config_path, softhsm_conf, labels, ha_init=_ready_group(softhsm_conf, library, labels, so)
    )


def _ready_group(softhsm_conf: Path, library: str, labels: list[str], so_pin: str | None) -> list[str]:
    """HA Init right after the tokens are in place, so the group is ready to use as a Luna HA
    group is once created: the domain keys on every member (HA Init (50) re-keys later).
    After the commit point: a failure leaves a usable home and says to run 50."""
    if so_pin is None:
        return [
            "HA Init not run (the SO PIN is not known): run HA Init (50) before generating "
            "keys on the HA slot"
        ]
    try:
        return _token_tool(
            softhsm_conf, {"action": "ha-init", "library": library, "labels": labels, "so_pin": so_pin}
        )["said"]
    except ProvisionError as exc:
        raise ProvisionError(
            f"the members are ready but HA Init failed ({exc}): run HA Init "
            "(50) before generating keys on the HA slot"
        ) from None


def _commit(
    home: Path,
    staging: Path,
    remove: list[Path],
    conf: ChrystokiConf,
    config_path: Path,
    softhsm_conf: Path,
    tokens: Path,
) -> None:
    """Old token folders out, new ones in, softhsm2.conf, then Chrystoki.conf (the commit point),
    each step undone if a later one fails."""
    undo: list = []
    try:
        if not tokens.exists():
            tokens.mkdir(mode=HOME_MODE)
            undo.append(lambda: shutil.rmtree(tokens, ignore_errors=True))
        if remove:
            trash = staging / "removed"
            trash.mkdir(exist_ok=True)
            for folder in remove:
                os.rename(folder, trash / folder.name)
                undo.append(lambda f=folder: os.rename(trash / f.name, f))
        new_tokens = staging / "tokens"
        for folder in sorted(new_tokens.iterdir()) if new_tokens.is_dir() else []:
            os.rename(folder, tokens / folder.name)
            undo.append(lambda f=folder: shutil.rmtree(tokens / f.name, ignore_errors=True))
        text = _softhsm_conf_text(tokens)
        previous = softhsm_conf.read_text() if softhsm_conf.exists() else None
        if previous != text:
            write_atomically(softhsm_conf, text)
            undo.append(
                lambda: (
                    softhsm_conf.unlink() if previous is None else write_atomically(softhsm_conf, previous)
                )
            )
        conf.save(config_path)  # temp file, fsync, rename (ChrystokiConf.save)
        _fsync_folder(home)
    except BaseException:
        for step in reversed(undo):
            with contextlib.suppress(OSError):
                step()
        raise
