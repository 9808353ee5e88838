"""TOKEN FUNCTIONS (CKDemo choices 1-15) on any slot, physical or HA virtual."""

from __future__ import annotations

import time

from ..codes import CKR_NO_EVENT, CKRError
from ..menu.context import Context, InputError
from ..menu.render import flags, version
from ..model import CK_EFFECTIVELY_INFINITE, CK_UNAVAILABLE_INFORMATION, CKU_SO, CKU_USER

USER_TYPES = [(CKU_SO, "Security Officer"), (CKU_USER, "Crypto User")]
WAIT_POLL_S = 0.2  # SoftHSM and p11-kit refuse blocking waits: poll instead


def open_session(ctx: Context) -> None:
    number, slot = ctx.choose_slot()
    rw = ctx.ask_yes_no("Read/write session?", True)
    session = slot.open_session(rw=rw)
    ctx.workspace.add_session(number, session)
    ctx.say(f"Session handle: {session.handle} (slot#{number}, {'R/W' if rw else 'R/O'})")


def close_session(ctx: Context) -> None:
    opened = ctx.choose_session()
    try:
        opened.session.close()
    except CKRError:
        # the handle is dead either way (e.g. the device went away): stop offering it
        ctx.workspace.forget_session(opened)
        raise
    ctx.workspace.forget_session(opened)
    ctx.say(f"Session {opened.handle} closed.")


def login(ctx: Context) -> None:
    opened = ctx.choose_session()
    user_type = ctx.ask_choice("Login as", USER_TYPES)
    pin = ctx.ask_secret("Enter PIN : ")
    opened.session.login(user_type, pin)
    ctx.say(f"Logged in as {dict(USER_TYPES)[user_type]} on session {opened.handle}.")


def logout(ctx: Context) -> None:
    opened = ctx.choose_session()
    opened.session.logout()
    ctx.say(f"Logged out (session {opened.handle}).")


def change_pin(ctx: Context) -> None:
    opened = ctx.choose_session()
    old = ctx.ask_secret("Enter old PIN : ")
    new = ctx.ask_secret("Enter new PIN : ")
    if ctx.ask_secret("Confirm new PIN : ") != new:
        raise InputError("The new PINs do not match; PIN not changed.")
    opened.session.set_pin(old, new)
    ctx.say("PIN changed.")


def init_token(ctx: Context) -> None:
    number, slot = ctx.choose_slot()
    so_pin = ctx.ask_secret("Enter SO PIN : ")
    label = ctx.ask("Enter token label : ")
    if not label or len(label.encode()) > 32:
        raise InputError("Invalid input: a token label has 1-32 bytes.")
    # asked last, after every answer: a refusal leaves a script in step
    membership = ha_membership(ctx, slot)
    if membership is not None:
        member, group = membership
        question = (
            f"Token {member} is a member of HA group {group}: all its keys will be lost. Re-initialise?"
        )
        if not confirm_destructive(ctx, question):
            raise InputError(f"Token {member} not re-initialised.")
    slot.init_token(so_pin, label)
    ctx.say(f"Token in slot#{number} initialised with label '{label}'.")


def ha_membership(ctx: Context, slot) -> tuple[str, str] | None:
    """(member label, group label) when the slot's token belongs to an HA group of the workspace."""
    serial = None
    for group in ctx.workspace.groups:
        for member in group.members:
            if member.slot is slot:
                return member.label or member.serial, group.label
            if serial is None:
                try:
                    serial = slot.token_info().serial_number
                except CKRError:
                    serial = ""  # unreadable now: matched by slot identity only
            if serial and member.serial == serial:
                return member.label or member.serial, group.label
    return None


def confirm_destructive(ctx: Context, question: str) -> bool:
    """A person answers y/n (default n); a replay goes ahead only after @confirm-destructive."""
    confirm = getattr(ctx.io, "confirm_destructive", None)
    if confirm is not None:
        return confirm(question)
    return ctx.ask_yes_no(question, False)


def init_pin(ctx: Context) -> None:
    opened = ctx.choose_session()
    pin = ctx.ask_secret("Enter new user PIN : ")
    if ctx.ask_secret("Confirm new user PIN : ") != pin:
        raise InputError("The PINs do not match; PIN not initialised.")
    opened.session.init_pin(pin)
    ctx.say("User PIN initialised.")


def mechanism_list(ctx: Context) -> None:
    _, slot = ctx.choose_slot()
    mechanisms = slot.mechanisms()
    ctx.table(
        ((n, f"0x{code:08X}", name) for n, (code, name) in enumerate(mechanisms, start=1)),
        ["#", "Value", "Mechanism"],
    )
    ctx.say(f"{len(mechanisms)} mechanisms.")


def mechanism_info(ctx: Context) -> None:
    _, slot = ctx.choose_slot()
    mechanisms = slot.mechanisms()
    text = ctx.ask("Enter mechanism (name, 0x value, or row # in the list) : ")
    mechanism = _pick_mechanism(text, mechanisms)
    info = slot.mechanism_info(mechanism)
    ctx.fields(
        [
            ("Mechanism", f"{info.name} (0x{info.mechanism:08X})"),
            ("Min key size", info.min_key_size),
            ("Max key size", info.max_key_size),
            ("Flags", flags(info.flags, info.flag_names)),
        ]
    )


def _pick_mechanism(text: str, mechanisms: list[tuple[int, str]]) -> int:
    by_name = {name.upper(): code for code, name in mechanisms}
    key = text.strip().upper()
    if key in by_name or "CKM_" + key in by_name:
        return by_name.get(key, by_name.get("CKM_" + key))
    try:
        value = int(text, 0)
    except ValueError:
        raise InputError(f"Invalid input ({text}): not a mechanism of this slot.") from None
    if text.strip().lower().startswith("0x"):
        return value
    if 1 <= value <= len(mechanisms):  # a plain number is a row of the list (8 Mechanism List)
        return mechanisms[value - 1][0]
    raise InputError(f"Invalid input ({text}): rows are 1-{len(mechanisms)}; a value is written 0x...")


def get_info(ctx: Context) -> None:
    _, slot = ctx.choose_slot()
    info = slot.library_info()
    ctx.fields(
        [
            ("Cryptoki version", version(info.cryptoki_version)),
            ("Manufacturer", info.manufacturer_id),
            ("Library", info.library_description),
            ("Library version", version(info.library_version)),
            ("Path", info.path),
        ]
    )


def slot_info(ctx: Context) -> None:
    number, slot = ctx.choose_slot()
    info = slot.slot_info()
    ctx.fields(
        [
            ("Slot", f"slot#{number} (slot id {info.slot_id})"),
            ("Description", info.description),
            ("Manufacturer", info.manufacturer_id),
            ("Flags", flags(info.flags, info.flag_names)),
            ("Hardware version", version(info.hardware_version)),
            ("Firmware version", version(info.firmware_version)),
        ]
    )


def token_info(ctx: Context) -> None:
    _, slot = ctx.choose_slot()
    t = slot.token_info()
    ctx.fields(
        [
            ("Label", t.label),
            ("Manufacturer", t.manufacturer_id),
            ("Model", t.model),
            ("Serial number", t.serial_number),
            ("Flags", flags(t.flags, t.flag_names)),
            ("Sessions (open/max)", f"{_count(t.session_count)}/{_limit(t.max_session_count)}"),
            ("R/W sessions (open/max)", f"{_count(t.rw_session_count)}/{_limit(t.max_rw_session_count)}"),
            ("PIN length (min-max)", f"{t.min_pin_len}-{t.max_pin_len}"),
            ("Public memory (free/total)", f"{_count(t.free_public_memory)}/{_count(t.total_public_memory)}"),
            (
                "Private memory (free/total)",
                f"{_count(t.free_private_memory)}/{_count(t.total_private_memory)}",
            ),
            ("Hardware version", version(t.hardware_version)),
            ("Firmware version", version(t.firmware_version)),
            ("UTC time", t.utc_time or "-"),
        ]
    )


def _count(value: int) -> str:
    return "unavailable" if value == CK_UNAVAILABLE_INFORMATION else str(value)


def _limit(value: int) -> str:
    return "unlimited" if value == CK_EFFECTIVELY_INFINITE else _count(value)


def session_info(ctx: Context) -> None:
    opened = ctx.choose_session()
    info = opened.session.info()
    ctx.fields(
        [
            ("Session handle", info.handle),
            ("Slot", f"slot#{opened.slot_number}"),
            ("State", info.state_name),
            ("Flags", flags(info.flags, info.flag_names)),
            ("Device error", f"0x{info.device_error:X}"),
        ]
    )


def get_slot_list(ctx: Context) -> None:
    rows = []
    for number, slot in enumerate(ctx.workspace.slots, start=1):
        try:
            info = slot.slot_info()
            label = slot.token_info().label if info.token_present else "-"
            rows.append((f"slot#{number}", info.description, "yes" if info.token_present else "no", label))
        except CKRError as exc:
            rows.append((f"slot#{number}", slot.fallback_description, "?", exc.name))
    ctx.table(rows, ["Slot", "Description", "Token", "Label"])
    ctx.say(f"{len(rows)} slots.")


def wait_for_slot_event(ctx: Context) -> None:
    _, slot = ctx.choose_slot()
    seconds = ctx.ask_int("Seconds to wait (0 = do not block) : ", 0, 3600, default=0)
    deadline = time.monotonic() + seconds
    while True:
        try:
            event_slot = slot.wait_for_event()
        except CKRError as exc:
            if exc.ckr != CKR_NO_EVENT or time.monotonic() >= deadline:
                raise
            time.sleep(WAIT_POLL_S)
            continue
        ctx.say(f"Slot event on slot id {event_slot}.")
        return
