"""The listening socket: one thread per connection, each connection its own application.

Frames are answered one by one, in order (p11-kit's client matches replies by call code, so this
is right even when several client threads share the socket). A request that does not decode gets
an error reply; broken framing (a huge length, a frame cut short, EOF inside a frame) closes that
connection only. However a connection ends, what it held is released (connection.release()).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import Callable

from ..rpc.buffer import CodecError
from ..rpc.calls import PROTOCOL_VERSION
from ..rpc.framing import HEADER, FrameStream, negotiate_version
from ..rpc.structs import Info, Version
from ..slots import Slot
from .connection import Connection
from .exposed import expose
from .faulted import FaultedAnswers
from .predicted import PredictedAnswers
from .faults import FaultBook
from . import unixsocket
from .operations import (
    CONNECTION_BUFFERED,
    CONNECTION_LOST,
    REFUSED_OBJECT_BYTES,
    SERVER_BUFFERED,
    SERVER_LOST,
    Budget,
)

DEFAULT_MAX_CONNECTIONS = 64  # applications at once; each holds a thread and its sessions
DEFAULT_REFUSED_OBJECTS = CONNECTION_LOST // REFUSED_OBJECT_BYTES  # an application's share: 4,096
STOP_WAIT_S = 5.0  # how long stop() waits for connection threads to release what they hold
ACCEPT_WAKE_S = 0.5


def peer_pid(connection: socket.socket) -> int | None:
    try:
        raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", raw)[0]
    except OSError:
        return None


class Server:
    """Serves `slots` on a Unix socket path (mode 0600: the tokens behind are logged in)."""

    def __init__(
        self,
        path: str | os.PathLike,
        slots: list[Slot],
        info: Info | None = None,
        log: Callable[[str], None] = print,
        on_error: Callable[[str, BaseException], None] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        faults: FaultBook | None = None,
        refused_objects: int = DEFAULT_REFUSED_OBJECTS,
    ) -> None:
        self.path = os.fspath(path)
        # the fault lab's rules (ckdemo fault add ...): none, and the request loop never looks
        self.faults = faults or FaultBook(log=log)
        self.max_connections = max_connections
        self.connection_lost = refused_objects * REFUSED_OBJECT_BYTES  # each connection's share
        self.budget = Budget(SERVER_BUFFERED, what="the server")  # every connection's is inside
        self.lost = Budget(SERVER_LOST, what="the server's member libraries")
        self.log = log
        self.on_error = on_error or (
            lambda where, error: log(f"{where}: internal error {type(error).__name__}: {error}")
        )
        self.slots = expose(slots, log)
        self.info = info or Info(Version(2, 40), "ckdemo", 0, "ckdemo serve", Version(1, 0))
        self.connections: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._count = 0
        self._stopping = False
        self.listener = unixsocket.listen(self.path, backlog=64)

    def serve_forever(self) -> None:
        # a signal the kernel hands to another thread does not interrupt accept(): wake now and
        # then, so the main thread runs the SIGTERM handler (it once waited here for ever)
        self.listener.settimeout(ACCEPT_WAKE_S)
        while not self._stopping:
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by stop()
                return
            with self._lock:
                if self._stopping:
                    connection.close()
                    return
                if len(self.connections) >= self.max_connections:
                    self.log(
                        f"refused a connection (pid {peer_pid(connection) or '?'}): "
                        f"{len(self.connections)} open already (--max-connections "
                        f"{self.max_connections})"
                    )
                    connection.close()
                    continue
                self._count += 1
                number = self._count
                thread = threading.Thread(
                    target=self._serve, args=(number, connection), name=f"connection-{number}", daemon=True
                )
                self.connections[number] = (connection, thread)
            try:
                thread.start()
            except RuntimeError as error:  # no thread to be had (memory, ulimit): this one fails alone
                with self._lock:
                    self.connections.pop(number, None)
                connection.close()
                self.log(f"connection {number} refused: no thread could serve it ({error})")

    def _serve(self, number: int, sock: socket.socket) -> None:
        started = time.monotonic()
        self.log(f"connection {number} opened (pid {peer_pid(sock) or '?'})")
        connection = Connection(
            number,
            self.slots,
            self.info,
            self.log,
            self.on_error,
            Budget(CONNECTION_BUFFERED, self.budget, f"connection {number}"),
            Budget(self.connection_lost, self.lost, f"connection {number}"),
        )
        state = connection.state
        how = "closed by the client"
        frames = FrameStream(sock)
        predicted = PredictedAnswers(connection)
        try:
            sock.sendall(bytes([negotiate_version(frames.version(), PROTOCOL_VERSION)]))
            send, pack = sock.sendall, HEADER.pack
            faults, faulted = self.faults, FaultedAnswers(connection, self.faults)
            serve = predicted.serve
            while True:
                call_code, body = frames.next()
                if faults.active:  # the fault lab: a wrapper around answering
                    reply = faulted.answer(body)
                    if reply is None:
                        how = "closed by a fault (disconnect)"
                        break
                    send(pack(call_code, 0, len(reply)) + reply)
                else:  # replies known ahead: another wrapper around answering
                    serve(call_code, body, send)
                if state.after_reply is not None:
                    if faults.active:  # timed: the application's next call waits for it
                        faulted.run_after_reply()
                    else:
                        connection.run_after_reply()
        except EOFError:
            if self._stopping:
                how = "closed by the server"
        except CodecError as error:
            how = f"closed: broken framing ({error})"
        except OSError as error:
            how = "closed by the server" if self._stopping else f"closed: {error.strerror or error}"
        except Exception as error:  # never a traceback on screen; the connection ends
            self.on_error(f"connection {number}", error)
            how = "closed after an internal error"
        finally:
            left = len(state.sessions)
            try:
                connection.release()
            finally:
                try:
                    sock.close()
                finally:
                    with self._lock:
                        self.connections.pop(number, None)
            released = f", {left} session(s) released" if left else ""
            early = f" ({predicted.early} answered as predicted)" if predicted.early else ""
            self.log(
                f"connection {number} {how} after {state.calls} call(s){early} in "
                f"{time.monotonic() - started:.1f} s{released}"
            )

    def stop(self) -> None:
        """Stop accepting, end every connection (each releases its sessions and login), remove
        the socket."""
        self._stopping = True
        self.faults.close()  # hangs end: their connections can be released
        unixsocket.close(self.listener, self.path)
        with self._lock:
            open_now = list(self.connections.values())
        for sock, _ in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + STOP_WAIT_S
        for _, thread in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))
