"""Token set-up in a short-lived child process: the PINs travel on stdin, never in argv or environ.

`softhsm2-util --init-token --pin P --so-pin S` would show both PINs to every local user in `ps`
for as long as it runs. SoftHSM2 reads SOFTHSM2_CONF once per process, at C_Initialize, so the
tokens of one token folder (a new home, or init's staging folder) are set up in a process of
their own, through PKCS#11 itself: C_InitToken, then C_OpenSession + C_Login(SO) + C_InitPIN.

    SOFTHSM2_CONF=<conf> python -I -m ckdemo.tokeninit  < request.json  > answer.json

Requests (one JSON object on stdin; the answer is one JSON object on stdout):
    {"action": "list", "library": L}                       -> {"tokens": {label: serial}}
    {"action": "create", "library": L, "labels": [...],
     "so_pin": S, "user_pin": U}                           -> {"tokens": {label: serial}}
    {"action": "verify", "library": L, "label": T,
     "user_pin": U or null, "so_pin": S or null}           -> {"user": CKR name, "so": CKR name}
    {"action": "ha-init", "library": L, "labels": [...],
     "so_pin": S}                                          -> {"said": [lines]}
       (HA Init over those member tokens: the group's domain keys, so it is ready to use)
Failure: one line on stderr, exit status 2.
"""

from __future__ import annotations

import json
import sys

CKF_TOKEN_INITIALIZED = 0x400
CKU_SO, CKU_USER = 0, 1


def _tokens(raw) -> dict[str, tuple[int, str]]:
    """Initialised tokens as {label: (slot id, serial)}."""
    found = {}
    for slot in raw.get_slot_list(True):
        info = raw.get_token_info(slot)
        if info.flags & CKF_TOKEN_INITIALIZED:
            found[info.label] = (slot, info.serial_number)
    return found


def _create(raw, labels: list[str], so_pin: str, user_pin: str) -> None:
    for label in labels:
        free = [
            slot
            for slot in raw.get_slot_list(True)
            if not raw.get_token_info(slot).flags & CKF_TOKEN_INITIALIZED
        ]
        if not free:
            raise RuntimeError("SoftHSM2 offers no free slot for a new token")
        slot = free[0]
        raw.init_token(slot, so_pin, label)  # SoftHSM2 adds the next free slot by itself
        session = raw.open_session(slot, rw=True)
        try:
            raw.login(session, CKU_SO, so_pin)
            raw.init_pin(session, user_pin)
            raw.logout(session)
        finally:
            raw.close_session(session)


def _login_result(raw, slot: int, user_type: int, pin: str) -> str:
    from .codes import CKRError

    session = raw.open_session(slot, rw=user_type == CKU_SO)  # an SO login needs R/W sessions only
    try:
        raw.login(session, user_type, pin)
        raw.logout(session)
        return "CKR_OK"
    except CKRError as exc:
        return exc.name
    finally:
        raw.close_session(session)


def _ha_init(library: str, labels: list[str], so_pin: str) -> list[str]:
    """HA Init (50) as the menu does it, over the member tokens by label."""
    from .ha.build import GroupConfig, build_group
    from .members.module import module_for
    from .members.slot import PhysicalSlot

    module = module_for(library).load()
    by_label = {}
    for slot_id in module.slot_ids():
        slot = PhysicalSlot(module, slot_id)
        if slot.slot_info().token_present:
            info = slot.token_info()
            by_label[info.label] = (info.serial_number, slot)
    missing = [label for label in labels if label not in by_label]
    if missing:
        raise RuntimeError(f"member token(s) {', '.join(missing)} not found")
    group = build_group(
        GroupConfig("init", "init"), [(by_label[label][0], by_label[label][1], label) for label in labels]
    )
    return group.ha_init(so_pin).lines()


def handle(request: dict) -> dict:
    from .members.module import module_for

    library = request["library"]
    if request["action"] == "ha-init":
        return {"said": _ha_init(library, list(request["labels"]), request["so_pin"])}
    raw = module_for(library).raw  # C_Initialize, with SOFTHSM2_CONF as this process got it
    action = request["action"]
    if action == "create":
        _create(raw, list(request["labels"]), request["so_pin"], request["user_pin"])
    elif action == "verify":
        token = _tokens(raw).get(request["label"])
        if token is None:
            return {"user": None, "so": None}
        slot = token[0]
        return {
            kind: (
                _login_result(raw, slot, user_type, request[f"{kind}_pin"])
                if request.get(f"{kind}_pin") is not None
                else None
            )
            for kind, user_type in (("user", CKU_USER), ("so", CKU_SO))
        }
    elif action != "list":
        raise ValueError(f"unknown action {action!r}")
    return {"tokens": {label: serial for label, (_, serial) in _tokens(raw).items()}}


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        answer = handle(request)
    except Exception as exc:  # one line for the parent, which reports it; never a traceback
        from .codes import CKRError

        text = str(exc) if isinstance(exc, CKRError) else f"{type(exc).__name__}: {exc}"
        print(text.splitlines()[0] if text else type(exc).__name__, file=sys.stderr)
        return 2
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
