"""Replies known before their requests come: a wrapper around answering.

A handler that knows what the application's next request will be and what it will be answered
(crypto_calls: an application that signs again and again sends C_SignInit then C_Sign with the
same key and data sizes) says so with ConnectionState.predict(request, reply, holds). When that
request comes, its reply is sent at once and the request is handled after, as any other (the
state changes it makes are the point); a handler whose answer then differs is a ckdemo bug,
logged. Any other request ends every prediction (it may change what they depended on).
"""

from __future__ import annotations

from typing import Callable

from ..rpc.framing import HEADER


class PredictedAnswers:
    """One connection's requests, answered early where a prediction holds."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.state = connection.state
        self.early = 0  # requests answered from a prediction

    def serve(self, call_code: int, body: bytes, send: Callable[[bytes], None]) -> None:
        """Send the reply frame to `body` (early when it was predicted), handle the request."""
        connection, state = self.connection, self.state
        early = self._early_reply(body) if state.predicted else None
        if early is None:
            reply = connection.answer(body)
            send(HEADER.pack(call_code, 0, len(reply)) + reply)
            return
        send(HEADER.pack(call_code, 0, len(early)) + early)
        self.early += 1
        reply = connection.answer(body)
        if reply != early:  # a prediction that did not hold: the client was misled
            state.on_error(
                f"connection {state.number}: a predicted reply",
                AssertionError(f"sent {early.hex()}, the handler answered {reply.hex()}"),
            )

    def _early_reply(self, body: bytes) -> bytes | None:
        predicted = self.state.predicted
        found = predicted.pop(body, None)
        predicted.clear()
        if found is None or (found[1] is not None and not found[1]()):
            return None
        return found[0]
