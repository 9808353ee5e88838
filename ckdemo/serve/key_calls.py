"""Key generation, wrapping and derivation calls of a connection."""

from __future__ import annotations

from dataclasses import dataclass

from . import key_checks, keygen, wire
from ..codes import (
    CKR_TEMPLATE_INCOMPLETE,
    CKR_UNWRAPPING_KEY_HANDLE_INVALID,
    CKR_WRAPPING_KEY_HANDLE_INVALID,
    CKRError,
)
from ..model import CKA_CLASS, CKA_KEY_TYPE, CKA_PRIVATE, CKA_TOKEN, CKA_VALUE_LEN
from ..rpc.structs import BufferSize
from .attributes import naming
from .client_session import ClientSession, arg_bytes, quietly
from .state import ConnectionState


@dataclass(slots=True)
class KeyCalls:
    """C_GenerateKey ... C_DeriveKey."""

    state: ConnectionState

    def C_GenerateKey(self, handle, mechanism, attributes) -> tuple:
        session = self.state.session(handle, "C_GenerateKey")
        template = wire.template(attributes, "C_GenerateKey")
        if mechanism.type in keygen.SECRET_KINDS:  # the login before the template's contents,
            self.state.may_create(
                session,
                bool(template.get(CKA_TOKEN, False)),  # as SoftHSM2 checks
                bool(template.get(CKA_PRIVATE, keygen.TOKEN_DEFAULT_PRIVATE)),
                "C_GenerateKey",
            )
        spec = keygen.secret_key_spec(mechanism.type, template)
        made = self._generate(session, spec, [template], "C_GenerateKey")
        return (self.state.created(session, made[0], spec.token, None),)

    def C_GenerateKeyPair(self, handle, mechanism, public_attributes, private_attributes) -> tuple:
        session = self.state.session(handle, "C_GenerateKeyPair")
        public = wire.template(public_attributes, "C_GenerateKeyPair")
        private = wire.template(private_attributes, "C_GenerateKeyPair")
        # the session and login first, as a token checks them before the templates' contents
        token = bool(public.get(CKA_TOKEN, False)) or bool(private.get(CKA_TOKEN, False))
        private_key = bool(private.get(CKA_PRIVATE, keygen.TOKEN_DEFAULT_PRIVATE))
        self.state.may_create(
            session, token, private_key or bool(public.get(CKA_PRIVATE, False)), "C_GenerateKeyPair"
        )
        spec = keygen.key_pair_spec(mechanism.type, public, private)
        made = self._generate(session, spec, [public, private], "C_GenerateKeyPair")
        tokens = (bool(public.get(CKA_TOKEN, False)), spec.token)  # each half says for itself
        return tuple(self.state.created(session, h, half_token, None) for h, half_token in zip(made, tokens))

    def _generate(self, session: ClientSession, spec, templates: list[dict], function: str) -> list[int]:
        """generate(), then what the KeySpec could not say set on each new key; a key that
        cannot be made as asked is destroyed again (on every member) and the refusal returned."""
        store = self.state.store(session)
        with self.state.making(function):
            made = store.generate(spec)
        try:
            for key, template in zip(made, templates):
                wanted = keygen.beyond_spec(template)
                if wanted:
                    with naming(function):
                        have = store.get_attributes(key, list(wanted))
                        differ = {a: v for a, v in wanted.items() if have.get(a) != v}
                        if differ:
                            store.set_attributes(key, differ)
        except CKRError as error:
            for key in made:
                quietly(lambda: store.destroy_object(key))
            raise CKRError(
                error.ckr,
                function,
                "the new key could not take every attribute of "
                "the template, so it was destroyed" + (f": {error.detail}" if error.detail else ""),
            ) from error
        return made

    def C_WrapKey(self, handle, mechanism, wrapping, key, offered) -> tuple:
        session = self.state.session(handle, "C_WrapKey")
        self.state.usable(session, wrapping, "C_WrapKey", CKR_WRAPPING_KEY_HANDLE_INVALID)
        key_checks.check_wrapping_key(
            mechanism.type, self.state.store(session).get_attributes(wrapping, key_checks.WRAPPING_FACTS)
        )
        self.state.usable(session, key, "C_WrapKey")
        request = (wrapping, key, mechanism)
        if session.wrapped is None or session.wrapped[0] != request:
            output = self.state.store(session).wrap_key(
                wrapping, key, mechanism.type, wire.mechanism_param(mechanism)
            )
            session.wrapped = (request, output)
        output = session.wrapped[1]
        if offered == 0 or offered < len(output):
            return (BufferSize(len(output)),)
        session.wrapped = None
        return (output,)

    def C_UnwrapKey(self, handle, mechanism, unwrapping, wrapped, attributes) -> tuple:
        session = self.state.session(handle, "C_UnwrapKey")
        key_checks.check_wrapped_length(mechanism.type, len(arg_bytes(wrapped)))
        self.state.usable(session, unwrapping, "C_UnwrapKey", CKR_UNWRAPPING_KEY_HANDLE_INVALID)
        key_checks.check_unwrapping_key(
            mechanism.type, self.state.store(session).get_attributes(unwrapping, key_checks.UNWRAPPING_FACTS)
        )
        template = wire.template(attributes, "C_UnwrapKey")
        if CKA_CLASS not in template or CKA_KEY_TYPE not in template:
            raise CKRError(CKR_TEMPLATE_INCOMPLETE, "C_UnwrapKey", "CKA_CLASS and CKA_KEY_TYPE are needed")
        object_class, key_type = int(template.pop(CKA_CLASS)), int(template.pop(CKA_KEY_TYPE))
        token, private = bool(template.get(CKA_TOKEN, False)), bool(template.get(CKA_PRIVATE, True))
        self.state.may_create(session, token, private, "C_UnwrapKey")
        with self.state.making("C_UnwrapKey"):
            made = self.state.store(session).unwrap_key(
                unwrapping,
                object_class,
                key_type,
                arg_bytes(wrapped),
                mechanism.type,
                template,
                wire.mechanism_param(mechanism),
            )
        return (self.state.created(session, made, token, private),)

    def C_DeriveKey(self, handle, mechanism, base, attributes) -> tuple:
        session = self.state.session(handle, "C_DeriveKey")
        self.state.usable(session, base, "C_DeriveKey")
        template = wire.template(attributes, "C_DeriveKey")
        if CKA_KEY_TYPE not in template:
            raise CKRError(CKR_TEMPLATE_INCOMPLETE, "C_DeriveKey", "CKA_KEY_TYPE is needed")
        template.pop(CKA_CLASS, None)
        key_type, length = int(template.pop(CKA_KEY_TYPE)), int(template.pop(CKA_VALUE_LEN, 0))
        token, private = bool(template.get(CKA_TOKEN, False)), bool(template.get(CKA_PRIVATE, True))
        self.state.may_create(session, token, private, "C_DeriveKey")
        with self.state.making("C_DeriveKey"):
            made = self.state.store(session).derive_key(
                base, mechanism.type, wire.mechanism_param(mechanism), key_type, length, template
            )
        return (self.state.created(session, made, token, private),)
