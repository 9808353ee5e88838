"""Object calls of a connection: a connection not logged in sees public objects only."""

from __future__ import annotations

from dataclasses import dataclass

from . import wire
from .. import codes
from ..codes import (
    CKR_ACTION_PROHIBITED,
    CKR_OPERATION_NOT_INITIALIZED,
    CKR_TEMPLATE_INCONSISTENT,
    CKR_USER_NOT_LOGGED_IN,
    CKRError,
)
from ..model import CKA_COPYABLE, CKA_PRIVATE, CKA_TOKEN
from .attributes import UnnamedAttribute, naming, read_attributes
from .state import ConnectionState


@dataclass(slots=True)
class ObjectCalls:
    """C_CreateObject ... C_FindObjectsFinal."""

    state: ConnectionState

    def C_CreateObject(self, handle, attributes) -> tuple:
        session = self.state.session(handle, "C_CreateObject")
        template = wire.template(attributes, "C_CreateObject")
        token, private = bool(template.get(CKA_TOKEN, False)), bool(template.get(CKA_PRIVATE, True))
        self.state.may_create(session, token, private, "C_CreateObject")
        with self.state.making("C_CreateObject"):
            made = self.state.store(session).create_object(template)
        return (self.state.created(session, made, token, private),)

    def C_CopyObject(self, handle, source, attributes) -> tuple:
        session = self.state.session(handle, "C_CopyObject")
        self.state.usable(session, source, "C_CopyObject")
        template = wire.template(attributes, "C_CopyObject")
        store = self.state.store(session)
        found = store.get_attributes(source, [CKA_TOKEN, CKA_PRIVATE, CKA_COPYABLE])
        token = bool(template.get(CKA_TOKEN, found.get(CKA_TOKEN, True)))
        private = bool(template.get(CKA_PRIVATE, found.get(CKA_PRIVATE, True)))
        # a token's order (SoftHSM2 2.6.1): copyable, no private -> public, then the session's rights
        if found.get(CKA_COPYABLE) is False:
            raise CKRError(CKR_ACTION_PROHIBITED, "C_CopyObject", f"object {source} is not copyable")
        if found.get(CKA_PRIVATE, True) and not private:
            raise CKRError(
                CKR_TEMPLATE_INCONSISTENT, "C_CopyObject", "a copy of a private object cannot be public"
            )
        self.state.may_create(session, token, private, "C_CopyObject")
        with self.state.making("C_CopyObject"):
            made = store.copy_object(source, template)
        return (self.state.created(session, made, token, private),)

    def C_DestroyObject(self, handle, target) -> tuple:
        session = self.state.session(handle, "C_DestroyObject")
        self.state.may_change(session, target, "C_DestroyObject")
        self.state.store(session).destroy_object(target)
        self.state.forget(session, target)
        return ()

    def C_GetObjectSize(self, handle, target) -> tuple:
        session = self.state.session(handle, "C_GetObjectSize")
        self.state.usable(session, target, "C_GetObjectSize")
        return (self.state.store(session).object_size(target),)

    def C_GetAttributeValue(self, handle, target, wanted) -> tuple:
        session = self.state.session(handle, "C_GetAttributeValue")
        self.state.usable(session, target, "C_GetAttributeValue")
        return read_attributes(self.state.store(session), target, wanted)

    def C_SetAttributeValue(self, handle, target, attributes) -> tuple:
        session = self.state.session(handle, "C_SetAttributeValue")
        self.state.may_change(session, target, "C_SetAttributeValue")
        template = wire.template(attributes, "C_SetAttributeValue")
        if template.get(CKA_PRIVATE) is False and self.state.user(session) is None:
            raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_SetAttributeValue")
        with naming("C_SetAttributeValue"):
            self.state.store(session).set_attributes(target, template)
        self.state.private.pop((session.slot.slot_id, target), None)
        self.state.key_facts.pop((session.slot.slot_id, target), None)  # its usage flags may have changed
        return ()

    def C_FindObjectsInit(self, handle, attributes) -> tuple:
        session = self.state.session(handle, "C_FindObjectsInit")
        if session.found is not None or session.operations.active:  # one operation at a time
            raise CKRError(codes.CKR_OPERATION_ACTIVE, "C_FindObjectsInit")
        template = wire.template(attributes, "C_FindObjectsInit")
        if not self.state.sees_private(session):  # public objects only, whoever else logged in
            if template.get(CKA_PRIVATE) is True:
                session.found = []
                return ()
            template[CKA_PRIVATE] = False
        try:
            with naming("C_FindObjectsInit"):
                session.found = self.state.own(session, self.state.store(session).find_objects(template))
        except UnnamedAttribute:  # no object has a type the slot cannot name (SoftHSM2: none found)
            session.found = []
        if not self.state.sees_private(session):
            for found in session.found:
                self.state.private[(session.slot.slot_id, found)] = False
        return ()

    def C_FindObjects(self, handle, most) -> tuple:
        session = self.state.session(handle, "C_FindObjects")
        if session.found is None:
            raise CKRError(CKR_OPERATION_NOT_INITIALIZED, "C_FindObjects")
        batch, session.found = session.found[:most], session.found[most:]
        return (tuple(batch),)

    def C_FindObjectsFinal(self, handle) -> tuple:
        session = self.state.session(handle, "C_FindObjectsFinal")
        if session.found is None:
            raise CKRError(CKR_OPERATION_NOT_INITIALIZED, "C_FindObjectsFinal")
        session.found = None
        return ()
