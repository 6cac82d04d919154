"""Offline mode is airtight: while it is on, nothing opens a connection to another computer, not even a name lookup,
including timm's weights hosted at a plain URL (which Hugging Face's offline flag does not cover)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from engine import offline
from engine.errors import ModelError
from engine.models.build import build_model
from tests.conftest import REPO

URL_HOSTED = "timm:gcvit_xxtiny.in1k"  # timm fetches these weights from github.com, not from the Hugging Face hub
NET_EVENTS = offline._EVENTS

# What reached the network: a second audit hook, added after the app's guard, sees only the events the guard let
# through (a hook that raises stops the event before later hooks). It refuses them too: tests never use the network.
offline.install_guard()
_recording = threading.Event()
_reached: list[tuple[str, str]] = []


def _record(event: str, args: tuple) -> None:
    if _recording.is_set() and event in NET_EVENTS:
        target = offline._remote_target(event, args)
        if target is not None:
            _reached.append((event, target))
            raise OSError(f"test: no network in tests ({target})")


sys.addaudithook(_record)


@pytest.fixture
def network_recorder(monkeypatch, tmp_path):
    """Records every network operation that gets past the app's guard, and every socket connect (monkeypatched),
    with empty weight caches (so that the weights would have to be downloaded)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    connects: list = []
    real_connect = socket.socket.connect

    def connect(self, address):
        connects.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    _reached.clear()
    _recording.set()
    yield _reached, connects
    _recording.clear()


@pytest.fixture
def offline_on(monkeypatch):
    monkeypatch.setenv(offline.OFFLINE_ENV, "1")


def test_url_hosted_pretrained_weights_are_refused_offline_without_any_connection(network_recorder, offline_on):
    reached, connects = network_recorder
    with pytest.raises(ModelError) as caught:
        build_model(URL_HOSTED, "pretrained", num_classes=3)
    assert "offline mode is on, so nothing is downloaded" in str(caught.value)
    assert reached == [] and connects == []


def test_without_offline_mode_the_same_build_does_reach_for_the_network(network_recorder, monkeypatch):
    """The recorder sees what the guard lets through: without offline mode, the build tries to download (and the
    recorder refuses it), so the test above would catch a guard that does nothing."""
    monkeypatch.delenv(offline.OFFLINE_ENV, raising=False)
    reached, _ = network_recorder
    with pytest.raises(ModelError):
        build_model(URL_HOSTED, "pretrained", num_classes=3)
    assert any("github" in target or "huggingface" in target for _, target in reached)


def test_a_build_that_may_not_download_opens_no_connection_even_online(network_recorder, monkeypatch):
    monkeypatch.delenv(offline.OFFLINE_ENV, raising=False)
    reached, connects = network_recorder
    with pytest.raises(ModelError) as caught:
        build_model(URL_HOSTED, "pretrained", num_classes=3, allow_download=False)
    assert "not on this computer" in str(caught.value)
    assert reached == [] and connects == []


def test_every_way_to_the_network_is_refused_with_a_sentence(network_recorder, offline_on):
    reached, _ = network_recorder
    with pytest.raises(offline.NetworkBlocked, match="Offline mode is on, so Transfer Studio opened no connection "
                                                     "to example.org"):
        socket.getaddrinfo("example.org", 443)
    with pytest.raises(offline.NetworkBlocked):
        socket.create_connection(("93.184.215.14", 80), timeout=1)
    with pytest.raises(offline.NetworkBlocked):
        socket.gethostbyname("example.org")
    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen("https://example.org/weights.pth", timeout=1)
    assert isinstance(caught.value.reason, offline.NetworkBlocked)
    assert reached == []


def test_this_computer_stays_reachable_offline(network_recorder, offline_on):
    """Loopback and local sockets are not the network (worker processes, local tools)."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        with socket.create_connection(("localhost", server.getsockname()[1]), timeout=5):
            pass
    finally:
        server.close()
    a, b = socket.socketpair()
    a.close(), b.close()
    assert network_recorder[0] == []


def test_no_network_holds_for_its_own_thread_only(network_recorder, monkeypatch):
    monkeypatch.delenv(offline.OFFLINE_ENV, raising=False)
    reached, _ = network_recorder
    other: list[BaseException] = []

    def lookup_elsewhere():
        try:
            socket.getaddrinfo("example.net", 80)
        except OSError as exc:
            other.append(exc)

    with offline.no_network():
        with pytest.raises(offline.NetworkBlocked):
            socket.getaddrinfo("example.com", 80)
        thread = threading.Thread(target=lookup_elsewhere)
        thread.start()
        thread.join()
    # The other thread was not held by the block: its lookup went on (to the recorder, which refused it).
    assert reached == [("socket.getaddrinfo", "example.net")]
    assert not isinstance(other[0], offline.NetworkBlocked)


@pytest.mark.slow
def test_the_command_line_says_offline_and_fails_cleanly(tmp_path, tiny_dataset):
    env = {**__import__("os").environ, offline.OFFLINE_ENV: "1", "TORCH_HOME": str(tmp_path / "torch")}
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "train", "--data", str(tiny_dataset), "--model",
                           URL_HOSTED, "--weights", "pretrained", "--epochs", "1", "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert "offline mode is on, so nothing is downloaded" in done.stderr
    assert "Traceback" not in done.stderr
