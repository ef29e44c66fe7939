"""Desktop notifications from inside a vault, relayed to the host's bus.

A vault's sessions talk to the vault's own session bus (nsshell.sessionbus),
and the host's bus is hidden from them.  `notify-send` and every program
that notifies still work: this relay owns org.freedesktop.Notifications on
the vault's bus and passes on to the host's notification service exactly
its four methods (Notify, CloseNotification, GetCapabilities,
GetServerInformation), and back the signals (NotificationClosed,
ActionInvoked, ActivationToken) about notifications it sent itself.
Nothing else of the host's bus is reachable through it.

Why here: the relay is a thread of the vault's supervisor, which runs
outside the vault's namespaces, already speaks D-Bus (nsshell.autolock) and
is non-dumpable.  So no process inside holds a connection to the host's bus
that a session could take over (a relay process inside would: sessions may
ptrace it), and the supervisor never sees the vault's files.  The keeper,
which can reach the vault's bus socket, connects to it each time the bus
starts and hands the connected socket over (the "BUS" line on their
channel); the relay authenticates on it as the user and takes the name.

A client that calls before the relay holds the name (it connects within
milliseconds of the bus starting) is served by D-Bus activation: the
vault's bus has a .service file for the name whose process only waits
(sessionbus.NOTIFICATIONS_WAITER), and the call is delivered to the relay as
soon as it owns the name.
"""

import os
import select
import sys
import threading
import traceback

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
INTERFACE = NAME
METHODS = {  # member -> its in-signature (the D-Bus desktop notifications spec, 1.2)
    "Notify": "susssasa{sv}i",
    "CloseNotification": "u",
    "GetCapabilities": "",
    "GetServerInformation": "",
}
SIGNALS = ("NotificationClosed", "ActionInvoked", "ActivationToken")
PEER = "org.freedesktop.DBus.Peer"


def log(message):
    sys.stderr.write(f"nsshell-notify: {message}\n")
    sys.stderr.flush()


def authenticate(sock):
    """D-Bus EXTERNAL authentication on a connected socket, as our uid (the
    vault's user namespace maps it 1:1, so the bus inside sees the same)."""
    uid = str(os.getuid()).encode().hex().encode()
    sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(256)
        if not chunk:
            raise ConnectionError("the vault's bus closed the connection while authenticating")
        reply += chunk
    if not reply.startswith(b"OK "):
        raise ConnectionError(f"the vault's bus refused us: {reply.strip().decode(errors='replace')}")
    sock.sendall(b"BEGIN\r\n")


class Relay:
    """One relay per connection to the vault's bus (a new bus, a new relay)."""

    def __init__(self, sock, host_address):
        from jeepney.io.blocking import DBusConnection

        sock.settimeout(10)
        authenticate(sock)
        sock.settimeout(None)
        self.private = DBusConnection(sock)
        self.host_address = host_address
        self.host = None
        self.pending = {}  # serial of our call on the host's bus -> the vault client's call
        self.ours = set()  # ids of the notifications sent through us
        self.early = []  # messages that came while we asked for the name

    def own_name(self):
        """RequestName; calls that the bus delivers as soon as we own the name
        (a client was waiting: see NOTIFICATIONS_WAITER) may come before its
        reply, and are kept for run() (send_and_get_reply would drop them)."""
        from jeepney.bus_messages import message_bus
        from jeepney.low_level import HeaderFields
        from jeepney.wrappers import unwrap_msg

        serial = next(self.private.outgoing_serial)
        self.private.send(message_bus.RequestName(NAME, 4), serial=serial)  # 4: do not queue
        while True:
            msg = self.private.receive(timeout=10)
            if msg.header.fields.get(HeaderFields.reply_serial) == serial:
                break
            self.early.append(msg)
        (result,) = unwrap_msg(msg)
        if result not in (1, 4):  # primary owner, or already owner
            raise ConnectionError(f"cannot own {NAME} on the vault's bus (RequestName said {result})")

    def connect_host(self):
        """The host's bus, with the notification service's signals subscribed;
        None (logged) if there is none: calls then get an error."""
        from jeepney import MatchRule
        from jeepney.bus_messages import message_bus
        from jeepney.io.blocking import open_dbus_connection

        try:
            host = open_dbus_connection(bus=self.host_address)
        except (OSError, KeyError, ValueError) as exc:
            log(f"no host session bus ({exc!r}); notifications from inside fail")
            return None
        rule = MatchRule(type="signal", sender=NAME, interface=INTERFACE, path=PATH)
        host.send_and_get_reply(message_bus.AddMatch(rule), timeout=10)
        return host

    def run(self):
        """Until the vault's bus goes away (stopped, killed, locked)."""
        self.own_name()
        self.host = self.connect_host()
        log("relaying org.freedesktop.Notifications to the host's bus")
        for msg in self.early:
            self.from_vault(msg)
        self.early = []
        while True:
            connections = [self.private] + ([self.host] if self.host is not None else [])
            for conn in connections:
                if not self.drain(conn):
                    if conn is self.private:
                        return  # the vault's bus is gone: this relay ends
                    log("lost the host's session bus; notifications from inside fail until it is back")
                    self.host.close()
                    self.host = None
            sockets = [c.sock for c in connections if c is self.private or self.host is not None]
            select.select(sockets, [], [], None if self.host is not None else 10.0)
            if self.host is None:
                self.host = self.connect_host()

    def drain(self, conn):
        """Handle every message already readable on conn; False at EOF."""
        while True:
            try:
                msg = conn.receive(timeout=0)
            except TimeoutError:
                return True
            except (OSError, EOFError, ConnectionError):
                return False
            if conn is self.private:
                self.from_vault(msg)
            else:
                self.from_host(msg)

    def from_vault(self, msg):
        from jeepney import DBusAddress, MessageType, new_method_call
        from jeepney.low_level import HeaderFields
        from jeepney.wrappers import new_error, new_method_return

        if msg.header.message_type != MessageType.method_call:
            return
        fields = msg.header.fields
        interface, member = fields.get(HeaderFields.interface), fields.get(HeaderFields.member)
        if interface == PEER and member == "Ping":
            self.private.send(new_method_return(msg))
            return
        signature = fields.get(HeaderFields.signature, "")
        if interface not in (INTERFACE, None) or member not in METHODS or fields.get(HeaderFields.path) != PATH:
            self.private.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s",
                                        (f"nsshell relays only {', '.join(METHODS)} of {INTERFACE}",)))
            return
        if signature != METHODS[member]:
            self.private.send(new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs", "s",
                                        (f"{member} takes ({METHODS[member]})",)))
            return
        if self.host is None:
            self.private.send(new_error(msg, "org.freedesktop.DBus.Error.ServiceUnknown", "s",
                                        ("no notification service: the host's session bus is not reachable",)))
            return
        call = new_method_call(DBusAddress(PATH, bus_name=NAME, interface=INTERFACE), member, signature or None, msg.body)
        serial = next(self.host.outgoing_serial)
        self.pending[serial] = msg
        self.host.send(call, serial=serial)

    def from_host(self, msg):
        from jeepney import DBusAddress, MessageType, new_signal
        from jeepney.low_level import HeaderFields
        from jeepney.wrappers import new_error, new_method_return

        kind = msg.header.message_type
        fields = msg.header.fields
        if kind in (MessageType.method_return, MessageType.error):
            call = self.pending.pop(fields.get(HeaderFields.reply_serial), None)
            if call is None:
                return
            signature = fields.get(HeaderFields.signature)
            if kind == MessageType.error:
                self.private.send(new_error(call, fields.get(HeaderFields.error_name), signature, msg.body))
                return
            member = call.header.fields.get(HeaderFields.member)
            if member == "Notify" and msg.body:
                self.ours.add(msg.body[0])
            self.private.send(new_method_return(call, signature, msg.body))
        elif kind == MessageType.signal:
            member = fields.get(HeaderFields.member)
            if member not in SIGNALS or not msg.body or msg.body[0] not in self.ours:
                return  # only about notifications sent from this vault
            if member == "NotificationClosed":
                self.ours.discard(msg.body[0])
            emitter = DBusAddress(PATH, interface=INTERFACE)
            self.private.send(new_signal(emitter, member, fields.get(HeaderFields.signature), msg.body))
        elif kind == MessageType.method_call:
            self.host.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))

    def close(self):
        for conn in (self.private, self.host):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass


def start(private_fd, host_address):
    """Relay on this connection to the vault's bus, in a daemon thread of
    the supervisor; it ends when that bus does."""
    thread = threading.Thread(target=_run, args=(private_fd, host_address), name="notify-relay", daemon=True)
    thread.start()
    return thread


def _run(private_fd, host_address):
    import socket

    sock = socket.socket(fileno=private_fd)  # closes the fd when closed: exactly once
    relay = None
    try:
        relay = Relay(sock, host_address)
        relay.run()
    except Exception:  # noqa: BLE001 - logged: notifications fail, nothing else does
        log(f"the notification relay stopped:\n{traceback.format_exc()}")
    finally:
        if relay is not None:
            relay.close()
        sock.close()
