"""Offline mode: while it is on, Transfer Studio opens no network connection at all, not even a name lookup.

The switch is the environment variable ``TRANSFER_STUDIO_OFFLINE`` (``1`` turns it on, also for the command line and
for any helper process, which inherits it); the window's *File > Work offline* sets it through ``set_offline``.

A flag that each downloader is asked to honour is not enough: ``timm.create_model(pretrained=True)`` downloads weights
hosted at a plain URL (``gcvit_tiny.in1k`` ...) whatever Hugging Face's offline flag says. So the switch is enforced
where every connection made from Python passes: an audit hook (PEP 578) refuses the ``socket.getaddrinfo``,
``socket.gethostbyname*``, ``socket.connect``, ``socket.sendto``/``sendmsg`` events for any address but this
computer's own (loopback, local sockets) with ``NetworkBlocked``, a ``ConnectionError`` whose text says why. Libraries
then fail as they would without a network, and callers turn that into their own sentence.

``no_network()`` applies the same guard to the current thread only, whatever the switch says: "use what is on this
computer" (a first attempt that must not download) is then also a guarantee.

Not covered: native code that opens its own sockets without going through Python's ``socket`` module (none of the
app's own paths do; huggingface_hub's native downloader ``hf_xet`` is only used when its offline flag is off, and
``engine.models.build`` keeps that flag on while the switch is).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
import threading
from typing import Iterator

from engine.errors import UserError

OFFLINE_ENV = "TRANSFER_STUDIO_OFFLINE"

# The audit events through which Python code reaches the network (CPython's socket module).
_LOOKUPS = frozenset({"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                      "socket.gethostbyaddr", "socket.getnameinfo"})
_SENDS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_EVENTS = _LOOKUPS | _SENDS
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_installed = False
_install_lock = threading.Lock()
_forced = threading.local()  # .depth > 0 inside no_network() on this thread


class NetworkBlocked(UserError, ConnectionError):
    """A network connection refused because offline mode is on (an OSError, so libraries treat it as no network)."""


def offline_mode() -> bool:
    """Whether offline mode is on (``TRANSFER_STUDIO_OFFLINE`` set to anything but 0/false/no). While it is, the
    guard refuses every connection made from Python to another computer."""
    on = os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")
    if on and not _installed:
        install_guard()
    return on


def set_offline(on: bool) -> None:
    """Turn offline mode on or off for this process and the processes it starts."""
    if on:
        os.environ[OFFLINE_ENV] = "1"
        install_guard()
    else:
        os.environ.pop(OFFLINE_ENV, None)


def install_guard() -> None:
    """Add the audit hook (once per process; an audit hook cannot be removed, so it stays and checks the switch on
    each network event). Called by ``offline_mode``, ``set_offline`` and ``no_network``, and when this module is
    imported with the switch on."""
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)
            _installed = True


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """Within the block, this thread opens no connection to another computer (NetworkBlocked), offline mode or not."""
    install_guard()
    _forced.depth = getattr(_forced, "depth", 0) + 1
    try:
        yield
    finally:
        _forced.depth -= 1


def blocked_message(target: str) -> str:
    return (f"Offline mode is on, so Transfer Studio opened no connection to {target}: switch Work offline off (File "
            f"menu, or {OFFLINE_ENV}=0) to download, or use what is on this computer.")


def _blocking() -> bool:
    if getattr(_forced, "depth", 0) > 0:
        return True
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _audit(event: str, args: tuple) -> None:
    if event not in _EVENTS or not _blocking():
        return
    target = _remote_target(event, args)
    if target is not None:
        raise NetworkBlocked(blocked_message(target))


def _remote_target(event: str, args: tuple) -> str | None:
    """The other computer an audited event would reach ('huggingface.co', '1.2.3.4:443'), or None when it stays on
    this computer (loopback, a local socket, a lookup of no host)."""
    if event in _LOOKUPS:
        host = args[0] if args else None
        if event == "socket.getnameinfo" and isinstance(host, tuple):
            host = host[0] if host else None
        return None if _is_local_host(host) else _text(host)
    sock, address = (args + (None, None))[:2]
    family = getattr(sock, "family", None)
    if getattr(socket, "AF_UNIX", None) is not None and family == socket.AF_UNIX:
        return None
    if isinstance(address, (str, bytes)):  # a socket path (AF_UNIX) or a family we do not know: no remote host
        return None if family not in (socket.AF_INET, socket.AF_INET6) else _text(address)
    if not isinstance(address, tuple) or not address:
        return None if address is None else _text(address)
    host = address[0]
    if _is_local_host(host):
        return None
    port = address[1] if len(address) > 1 else None
    return f"{_text(host)}:{port}" if port is not None else _text(host)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _is_local_host(host) -> bool:
    if host is None:
        return True
    name = _text(host).strip().lower().rstrip(".")
    if name in ("",) or name in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0].strip("[]")).is_loopback
    except ValueError:
        return False


if offline_mode():  # a process started with the switch on is guarded from its first import of the engine
    install_guard()
