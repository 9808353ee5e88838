"""Builds the workspace the menu drives: loads the configured libraries and lists their slots."""
from __future__ import annotations

from .codes import CKRError
from .settings import Settings, SettingsError
from .workspace import Workspace


def build_workspace(settings: Settings) -> Workspace:
    from .members.module import module_for  # python-pkcs11 is imported only when needed
    from .members.slot import PhysicalSlot

    settings.apply_environment()
    libraries = settings.libraries()
    if not libraries:
        raise SettingsError(f"no PKCS#11 library configured in {settings.config_path} "
                            "(use --module PATH or ckdemo init)")
    slots = []
    for path in libraries:
        try:
            module = module_for(path).load()
            slot_ids = module.slot_ids()
        except CKRError as exc:
            raise SettingsError(f"cannot use PKCS#11 library {path}: {exc}") from None
        slots.extend(PhysicalSlot(module, slot_id) for slot_id in slot_ids)
    return Workspace(_in_member_order(slots, settings.member_labels()))


def _in_member_order(slots: list, labels: list[str]) -> list:
    """Members first in the configured order, so slot#1 is member1 whatever ids SoftHSM drew."""
    def key(slot) -> tuple[int, int]:
        try:
            label = slot.token_info().label if slot.slot_info().token_present else None
        except CKRError:
            label = None
        return (labels.index(label) if label in labels else len(labels), slot.slot_id)
    return sorted(slots, key=key)
