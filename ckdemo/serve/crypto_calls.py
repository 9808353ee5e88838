"""Cryptographic calls of a connection: Init keeps the operation, the last call does it on the slot."""

from __future__ import annotations

from dataclasses import dataclass, replace

from functools import partial

from . import key_checks, wire
from .. import codes
from ..codes import CKR_MECHANISM_INVALID, CKRError
from ..model import CKA_CLASS, CKA_KEY_TYPE
from ..rpc.calls import BY_NAME
from ..rpc.codec import encode_request, encode_response
from ..rpc.structs import BufferSize
from ..slots import Session
from .client_session import ClientSession, arg_bytes
from .operations import DECRYPT, DIGEST, ECB_BLOCK, ENCRYPT, SIGN, VERIFY, Operation
from .state import ConnectionState


MAX_RANDOM_BYTES = 1 << 20  # per C_GenerateRandom (the wire's frames stop at 16 MiB)
MAX_RANDOM_AHEAD = 4096  # a C_GenerateRandom up to this size gets the next one made ahead

# A signature's size depends on the key and mechanism only. When a client asks it (buffer size
# 0) and this connection has signed with that key and mechanism before, the size is answered at
# once and the signature computed after the reply has gone (ConnectionState.after_reply), while the
# client is busy sending the call that fetches it: the member's work overlaps one round trip.
# A refusal found then is the answer to that call, which PKCS#11 allows (a size query that
# succeeds does not promise the signature).
#
# The two calls around it are known before they come (ConnectionState.predict): the fetch, once the
# signature is computed (its request is the size query with the signature's length as buffer),
# and the next C_SignInit with the same session, mechanism and key, once a signature is delivered
# (nothing of this connection has changed if it is the very next request, and the slot still
# offers the mechanism). Their replies go out first; the handlers run after, as for any call.
#
# Random bytes the same way: after a C_GenerateRandom of up to MAX_RANDOM_AHEAD bytes, the slot
# makes as many again for the session (after the reply has gone), and the same request is
# predicted with them; the handler hands out what was made ahead when there is some.
_C_SIGN_INIT, _C_SIGN = BY_NAME["C_SignInit"], BY_NAME["C_Sign"]
_C_GENERATE_RANDOM = BY_NAME["C_GenerateRandom"]
_SIGN_INIT_DONE = encode_response(_C_SIGN_INIT)  # CKR_OK, nothing more


def _size_key(slot_id: int, key: int | None, mechanism: int, param) -> tuple | None:
    """What a signature's size depends on; None when the parameter cannot be a dict key."""
    try:
        key = (slot_id, key, mechanism, param)
        hash(key)
    except TypeError:
        return None
    return key


def _in_order(op: Operation) -> list[bytes | int]:
    """The data parts and the keys of a digest in the order the application gave them."""
    pieces: list[bytes | int] = []
    keys = iter(zip(op.key_at, op.keys))
    waiting = next(keys, None)
    for index, part in enumerate(op.parts + [b""]):
        while waiting is not None and waiting[0] <= index:
            pieces.append(waiting[1])
            waiting = next(keys, None)
        if part:
            pieces.append(part)
    return pieces


@dataclass(slots=True)
class CryptoCalls:
    """C_SignInit ... C_DigestFinal, C_SeedRandom, C_GenerateRandom."""

    state: ConnectionState

    def _init(self, handle, mechanism, key, kind: str, function: str) -> tuple:
        session = self.state.session(handle, function)
        if session.found is not None:  # a search is going on: one operation at a time
            raise CKRError(codes.CKR_OPERATION_ACTIVE, function, "a search is active in this session")
        if session.operations.active:  # before the key, as SoftHSM2 checks (SignInit, DigestInit ...)
            raise CKRError(
                codes.CKR_OPERATION_ACTIVE,
                function,
                f"a {next(iter(session.operations.active))} operation is active in this session",
            )
        if key is not None:
            self.state.usable(session, key, function)
        if not session.slot.offers(mechanism.type):
            raise CKRError(
                CKR_MECHANISM_INVALID, function, f"mechanism {mechanism.type:#x} is not offered by this slot"
            )
        param = wire.mechanism_param(mechanism)
        reauthenticate = False
        if key is not None and kind in key_checks.USAGE:
            facts = self._key_facts(session, key)
            key_checks.check(kind, mechanism.type, facts, function)
            if mechanism.type in key_checks.HMAC and not facts.length:
                self._hmac_key_length(session, key, kind, mechanism.type, function)
            reauthenticate = facts.always_authenticate and kind in key_checks.REAUTHENTICATED
        # (nothing of an always-authenticate key's operation is predicted or made ahead)
        size_key = (
            _size_key(session.slot.slot_id, key, mechanism.type, param)
            if kind == SIGN and not reauthenticate
            else None
        )
        init = (handle, mechanism, key) if size_key is not None else None
        session.operations.start(
            Operation(
                kind, mechanism.type, param, key, size_key=size_key, init=init, reauthenticate=reauthenticate
            ),
            function,
        )
        return ()

    @staticmethod
    def _logged_in_for(operation: Operation, function: str) -> None:
        """A CKA_ALWAYS_AUTHENTICATE key's operation goes on only after its context-specific
        login: else it ends with CKR_USER_NOT_LOGGED_IN, as SoftHSM2 ends it."""
        if operation.reauthenticate:
            raise CKRError(
                codes.CKR_USER_NOT_LOGGED_IN,
                function,
                "the key is CKA_ALWAYS_AUTHENTICATE: C_Login(CKU_CONTEXT_SPECIFIC) first",
            )

    def _key_facts(self, session: ClientSession, key: int) -> key_checks.KeyFacts:
        """Read once per key (forgotten when the key changes or goes: ConnectionState.forget)."""
        cache = (session.slot.slot_id, key)
        facts = self.state.key_facts.get(cache)
        if facts is None:
            try:
                values = self.state.store(session).get_attributes(key, key_checks.FACTS)
            except CKRError as error:  # none of them: a data object, which may do nothing
                if error.ckr not in (codes.CKR_ATTRIBUTE_TYPE_INVALID, codes.CKR_ATTRIBUTE_SENSITIVE):
                    raise
                values = {}
            facts = key_checks.KeyFacts.read(values, self._always_authenticate(session, key))
            self.state.key_facts[cache] = facts
        return facts

    def _hmac_key_length(
        self, session: ClientSession, key: int, kind: str, mechanism: int, function: str
    ) -> None:
        """A secret key whose CKA_VALUE_LEN the slot does not give (SoftHSM2 leaves it 0 in an
        unwrapped key) is tried with one MAC on the slot: the token's answer to a key too short
        comes at the Init, as one token gives it. Once long enough, it is not tried again."""
        store = self.state.store(session)
        try:
            if kind == SIGN:
                store.sign(key, mechanism, b"length")
            else:
                store.verify(key, mechanism, b"length", bytes(key_checks.HMAC[mechanism][1]))
        except CKRError as error:
            if error.ckr == codes.CKR_KEY_SIZE_RANGE:
                raise CKRError(error.ckr, function, "the key is shorter than the mechanism takes") from None
            if error.ckr not in (codes.CKR_SIGNATURE_INVALID, codes.CKR_SIGNATURE_LEN_RANGE):
                return  # another answer: the operation itself gives it
        cache = (session.slot.slot_id, key)
        self.state.key_facts[cache] = replace(
            self.state.key_facts[cache], length=key_checks.HMAC[mechanism][1]
        )

    def _always_authenticate(self, session: ClientSession, key: int) -> bool:
        try:
            found = self.state.store(session).get_attributes(key, [key_checks.CKA_ALWAYS_AUTHENTICATE])
        except CKRError as error:  # not a private key: it has no such attribute
            if error.ckr not in (codes.CKR_ATTRIBUTE_TYPE_INVALID, codes.CKR_ATTRIBUTE_SENSITIVE):
                raise
            return False
        return bool(found.get(key_checks.CKA_ALWAYS_AUTHENTICATE))

    def _single(self, handle, kind: str, function: str, data, offered: int, compute) -> tuple:
        # written out, no closures: every signature of every application passes here twice
        session = self.state.session(handle, function)
        operations = session.operations
        operation = operations.get(kind, function)
        try:  # any refusal ends the operation (PKCS#11), except a size answer
            self._logged_in_for(operation, function)
            if operation.multi:
                raise CKRError(codes.CKR_OPERATION_ACTIVE, function, "a multi-part operation is going on")
            self._may_deliver(session, operation, function)
            message = arg_bytes(data)
            work = partial(compute, session, operation)
            size_key = operation.size_key
            if size_key is None:
                output = operation.output(message, work)
            else:  # a signature
                if not offered:
                    size = self.state.signature_sizes.get(size_key)
                    if size is not None:
                        if not operation.ready_for(message):
                            self.state.after_reply = partial(
                                self._sign_ahead, handle, operation, message, work
                            )
                        return (BufferSize(size),)
                output = operation.output(message, work)
                self.state.signature_sizes[size_key] = len(output)
                delivered = operations.deliver(kind, output, offered)
                if delivered is output:  # the operation is over: the same Init may well follow
                    self._predict_init(session, operation)
                return (delivered,)
            return (operations.deliver(kind, output, offered),)
        except BaseException:
            operations.end(kind)
            raise

    def _sign_ahead(self, handle: int, operation: Operation, message: bytes, work) -> None:
        """The signature whose size has been answered; then the call fetching it is known."""
        operation.prepare(message, work)
        output = operation.computed()
        if output is not None:
            self.state.predict(
                encode_request(_C_SIGN, handle, message, len(output)), encode_response(_C_SIGN, output)
            )

    def _predict_init(self, session: ClientSession, operation: Operation) -> None:
        handle, mechanism, key = operation.init
        self.state.predict(
            encode_request(_C_SIGN_INIT, handle, mechanism, key),
            _SIGN_INIT_DONE,
            partial(session.slot.still_offers, mechanism.type),
        )

    def _update(self, handle, kind: str, function: str, data) -> tuple:
        session = self.state.session(handle, function)

        def body(operation: Operation) -> None:
            self._logged_in_for(operation, function)
            operation.add(arg_bytes(data), function)

        session.operations.run(kind, function, body)
        return ()

    def _final(self, handle, kind: str, function: str, offered: int, compute) -> tuple:
        session = self.state.session(handle, function)

        def body(operation: Operation):
            self._logged_in_for(operation, function)
            self._may_deliver(session, operation, function)
            data = operation.collected() + operation.carry
            if operation.mechanism in ECB_BLOCK and operation.multi and not data:
                output = b""  # every block went out with its Update
            else:
                output = operation.output(data, lambda d: compute(session, operation, d))
            return (session.operations.deliver(kind, output, offered),)

        return session.operations.run(kind, function, body)

    def _may_deliver(self, session: ClientSession, operation: Operation, function: str) -> None:
        """Logged out since Init: no output, not even one made before (and kept for a fetch)."""
        if operation.key is not None:
            self.state.usable(session, operation.key, function)

    def _keyed(self, session: ClientSession, operation: Operation, function: str) -> Session:
        self.state.usable(session, operation.key, function)  # still, after a logout in between
        return self.state.store(session)

    def _sign(self, session, op, data):
        if op.context_pin is not None:
            return self._keyed(session, op, "C_Sign").sign(
                op.key, op.mechanism, data, op.param, context_pin=op.context_pin
            )
        return self._keyed(session, op, "C_Sign").sign(op.key, op.mechanism, data, op.param)

    def _encrypt(self, session, op, data):
        return self._keyed(session, op, "C_Encrypt").encrypt(op.key, op.mechanism, data, op.param)

    def _decrypt(self, session, op, data):
        if op.context_pin is not None:
            return self._keyed(session, op, "C_Decrypt").decrypt(
                op.key, op.mechanism, data, op.param, context_pin=op.context_pin
            )
        return self._keyed(session, op, "C_Decrypt").decrypt(op.key, op.mechanism, data, op.param)

    def _digest(self, session, op, data):
        if not op.keys:
            return self.state.store(session).digest(op.mechanism, data)
        if len(op.keys) == 1 and not op.parts:
            op.key = op.keys[0]
            return self._keyed(session, op, "C_DigestKey").digest_key(op.mechanism, op.key)
        for key in op.keys:  # still, after a logout in between
            self.state.usable(session, key, "C_DigestFinal")
        return self.state.store(session).digest_parts(op.mechanism, _in_order(op))

    def C_SignInit(self, handle, mechanism, key) -> tuple:
        return self._init(handle, mechanism, key, SIGN, "C_SignInit")

    def C_Sign(self, handle, data, offered) -> tuple:
        return self._single(handle, SIGN, "C_Sign", data, offered, self._sign)

    def C_SignUpdate(self, handle, data) -> tuple:
        return self._update(handle, SIGN, "C_SignUpdate", data)

    def C_SignFinal(self, handle, offered) -> tuple:
        return self._final(handle, SIGN, "C_SignFinal", offered, self._sign)

    def C_VerifyInit(self, handle, mechanism, key) -> tuple:
        return self._init(handle, mechanism, key, VERIFY, "C_VerifyInit")

    def _verify(self, handle, function: str, data, signature) -> tuple:
        session = self.state.session(handle, function)

        def body(op: Operation):
            if data is not None and op.multi:
                raise CKRError(codes.CKR_OPERATION_ACTIVE, function, "a multi-part operation is going on")
            message = op.collected() if data is None else arg_bytes(data)
            self._keyed(session, op, function).verify(
                op.key, op.mechanism, message, arg_bytes(signature), op.param
            )
            session.operations.end(VERIFY)
            return ()

        return session.operations.run(VERIFY, function, body)

    def C_Verify(self, handle, data, signature) -> tuple:
        return self._verify(handle, "C_Verify", data, signature)

    def C_VerifyUpdate(self, handle, data) -> tuple:
        return self._update(handle, VERIFY, "C_VerifyUpdate", data)

    def C_VerifyFinal(self, handle, signature) -> tuple:
        return self._verify(handle, "C_VerifyFinal", None, signature)

    def C_EncryptInit(self, handle, mechanism, key) -> tuple:
        return self._init(handle, mechanism, key, ENCRYPT, "C_EncryptInit")

    def C_Encrypt(self, handle, data, offered) -> tuple:
        return self._single(handle, ENCRYPT, "C_Encrypt", data, offered, self._encrypt)

    def C_EncryptUpdate(self, handle, data, offered) -> tuple:
        return self._collect(handle, ENCRYPT, "C_EncryptUpdate", data, offered)

    def C_EncryptFinal(self, handle, offered) -> tuple:
        return self._final(handle, ENCRYPT, "C_EncryptFinal", offered, self._encrypt)

    def C_DecryptInit(self, handle, mechanism, key) -> tuple:
        return self._init(handle, mechanism, key, DECRYPT, "C_DecryptInit")

    def C_Decrypt(self, handle, data, offered) -> tuple:
        return self._single(handle, DECRYPT, "C_Decrypt", data, offered, self._decrypt)

    def C_DecryptUpdate(self, handle, data, offered) -> tuple:
        return self._collect(handle, DECRYPT, "C_DecryptUpdate", data, offered)

    def C_DecryptFinal(self, handle, offered) -> tuple:
        return self._final(handle, DECRYPT, "C_DecryptFinal", offered, self._decrypt)

    def _collect(self, handle, kind: str, function: str, data, offered: int) -> tuple:
        """An Update with output: the data is kept, the output comes at Final. A size query
        (buffer length 0) consumes nothing, as with p11-kit's server (the module gets NULL)."""
        session = self.state.session(handle, function)
        operation = session.operations.get(kind, function)
        block = ECB_BLOCK.get(operation.mechanism)
        if block is None:  # kept for Final
            if offered == 0:
                return (BufferSize(0),)
            self._update(handle, kind, function, data)
            return (b"",)
        pending = operation.carry + arg_bytes(data)
        whole = len(pending) // block * block
        if offered < whole or offered == 0:  # a size query or a buffer too small: nothing used
            return (BufferSize(whole),)
        compute = self._encrypt if kind == ENCRYPT else self._decrypt

        def body(op: Operation):
            op.multi = True
            output = compute(session, op, pending[:whole]) if whole else b""
            op.carry = pending[whole:]
            return (output,)

        return session.operations.run(kind, function, body)

    def C_DigestInit(self, handle, mechanism) -> tuple:
        return self._init(handle, mechanism, None, DIGEST, "C_DigestInit")

    def C_Digest(self, handle, data, offered) -> tuple:
        return self._single(handle, DIGEST, "C_Digest", data, offered, self._digest)

    def C_DigestUpdate(self, handle, data) -> tuple:
        return self._update(handle, DIGEST, "C_DigestUpdate", data)

    def C_DigestKey(self, handle, key) -> tuple:
        session = self.state.session(handle, "C_DigestKey")
        self.state.usable(session, key, "C_DigestKey")
        running = session.operations.get(DIGEST, "C_DigestKey")  # none running: that first
        found = self.state.store(session).get_attributes(key, [CKA_CLASS])
        if found.get(CKA_CLASS) in (key_checks.CKO_PUBLIC_KEY, key_checks.CKO_PRIVATE_KEY):
            key_type = self.state.store(session).get_attributes(key, [CKA_KEY_TYPE]).get(CKA_KEY_TYPE)
            key_checks.check_digestible(int(found[CKA_CLASS]), key_type)  # outside run(): goes on
        if running.parts or running.keys:  # digested at Final with the rest: asked alone now,
            try:  # so that the slot's refusal of this key comes here, and the digest goes on
                self.state.store(session).digest_key(running.mechanism, key)
            except CKRError as error:
                if error.ckr == codes.CKR_KEY_INDIGESTIBLE:
                    raise

        def add(operation: Operation) -> None:
            operation.multi = True
            operation.key_at.append(len(operation.parts))
            operation.keys.append(key)
            if len(operation.keys) == 1 and not operation.parts:
                # digested now, so a key the slot will not digest is refused here, as a token
                # refuses it (CKR_KEY_INDIGESTIBLE), not at C_DigestFinal; Final hands it out
                operation.prepare(b"", lambda data: self._digest(session, operation, data))
                if operation.computed() is None:
                    operation.output(b"", None)  # raises the refusal kept by prepare

        session.operations.run(DIGEST, "C_DigestKey", add)
        return ()

    def C_DigestFinal(self, handle, offered) -> tuple:
        return self._final(handle, DIGEST, "C_DigestFinal", offered, self._digest)

    def C_SeedRandom(self, handle, seed) -> tuple:
        session = self.state.session(handle, "C_SeedRandom")
        self.state.store(session).seed_random(arg_bytes(seed))
        for each in self.state.sessions.values():  # bytes made before the seed are not handed out
            each.random_ahead = None
        return ()

    def C_GenerateRandom(self, handle, length) -> tuple:
        session = self.state.session(handle, "C_GenerateRandom")
        if length == 0:  # as one token behind p11-kit server: its server hands the token NULL
            raise CKRError(codes.CKR_ARGUMENTS_BAD, "C_GenerateRandom", "no room for random bytes")
        if length > MAX_RANDOM_BYTES:  # a client's u32 must not make the server allocate 4 GB
            raise CKRError(
                codes.CKR_DEVICE_MEMORY,
                "C_GenerateRandom",
                f"{length} random bytes asked, this server gives at most {MAX_RANDOM_BYTES}",
            )
        ahead, session.random_ahead = session.random_ahead, None
        if ahead is None or len(ahead) != length:
            ahead = self.state.store(session).generate_random(length)
        if length <= MAX_RANDOM_AHEAD:
            self.state.after_reply = partial(self._random_ahead, handle, session, length)
        return (ahead,)

    def _random_ahead(self, handle: int, session: ClientSession, length: int) -> None:
        if self.state.sessions.get(handle) is not session:
            return
        try:
            made = self.state.store(session).generate_random(length)
        except CKRError:
            return  # the next request asks the slot itself, and gets its answer
        session.random_ahead = made
        self.state.predict(
            encode_request(_C_GENERATE_RANDOM, handle, length), encode_response(_C_GENERATE_RANDOM, made)
        )
