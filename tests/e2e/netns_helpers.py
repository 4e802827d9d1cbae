"""Network namespaces and router stand-ins for e2e tests: a caller namespace reachable only
through a veth whose end in this namespace carries "public" addresses, and userspace UDP/TCP
forwards playing the router's port forwards, optionally lossy, jittery and reordering (this
machine's kernel has no netem, so the impairment is done here, on the forwarded datagrams)."""

import os
import random
import shutil
import socket
import subprocess
import threading

import pytest


class UdpForward:
    """A router's UDP port forward stand-in: datagrams to `listen` go on to `target` from a
    socket of their own per sender, and the answers come back from `listen`. With `loss`,
    `jitter` (seconds) and `reorder`, datagrams in both directions are dropped with that
    probability, delayed by up to `jitter`, or held back behind the next ones (seeded)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], loss: float = 0.0,
                 jitter: float = 0.0, reorder: float = 0.0, seed: int = 7):
        self.target = target
        self.loss, self.jitter, self.reorder = loss, jitter, reorder
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.dropped = 0
        self.outer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.outer.bind(listen)
        self.inner: dict[tuple, socket.socket] = {}
        self.alive = True
        threading.Thread(target=self._outward, daemon=True).start()

    def _send(self, sock: socket.socket, data: bytes, to: tuple) -> None:
        if self.loss or self.jitter or self.reorder:
            with self.lock:
                roll, delay = self.random.random(), self.random.random() * self.jitter
                held = self.random.random() < self.reorder
            if roll < self.loss:
                self.dropped += 1
                return
            if held:
                delay += 0.03  # behind the datagrams of the next 30 ms
            if delay > 0:
                timer = threading.Timer(delay, self._send_now, args=(sock, data, to))
                timer.daemon = True
                timer.start()
                return
        self._send_now(sock, data, to)

    def _send_now(self, sock: socket.socket, data: bytes, to: tuple) -> None:
        try:
            sock.sendto(data, to)
        except OSError:
            pass

    def _outward(self):
        while self.alive:
            try:
                data, sender = self.outer.recvfrom(65536)
            except OSError:
                return
            inner = self.inner.get(sender)
            if inner is None:
                inner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                inner.bind(("127.0.0.1", 0))
                self.inner[sender] = inner
                threading.Thread(target=self._inward, args=(inner, sender), daemon=True).start()
            self._send(inner, data, self.target)

    def _inward(self, inner: socket.socket, sender: tuple):
        while self.alive:
            try:
                data, _ = inner.recvfrom(65536)
            except OSError:
                return
            self._send(self.outer, data, sender)

    def close(self):
        self.alive = False
        self.outer.close()
        for inner in self.inner.values():
            inner.close()


class TcpForward:
    """The same for TCP (the signalling connection); `cut()` ends every connection at once."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]):
        self.target = target
        self.server = socket.create_server(listen)
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> int:
        """Ends every connection through the forward (a router dropping its state)."""
        connections, self.connections = self.connections, []
        for s in connections:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(connections) // 2

    def close(self):
        self.server.close()
        self.cut()


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


@pytest.fixture
def caller_namespace():
    """A network namespace for a caller "on the internet": its only way to rtcbox is a veth
    to this namespace, whose end has the old (10.77.0.1) and the new (10.77.1.1) public
    address. rtcbox's own address (127.0.0.1) is the caller's own loopback there: unreachable."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("CI"):
            pytest.fail("this test needs root and iproute2 (ip) to create a network namespace")
        pytest.skip("needs root and iproute2 (ip) to create a network namespace")
    tag = f"{os.getpid() % 100000}"
    ns, host_end, ns_end = f"rtcbox-ip-{tag}", f"rtbh{tag}", f"rtbc{tag}"
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", ns)
        # No IPv6 link-local addresses: one would finish duplicate address detection a second
        # or so after the link comes up, and Chromium started in the namespace by then aborts
        # its page load with net::ERR_NETWORK_CHANGED (seen in CI). The tests use IPv4 only.
        run("ip", "link", "set", host_end, "addrgenmode", "none")
        run("ip", "-n", ns, "link", "set", ns_end, "addrgenmode", "none")
        for address in ("10.77.0.1/24", "10.77.1.1/24"):
            run("ip", "addr", "add", address, "dev", host_end)
        run("ip", "link", "set", host_end, "up")
        for address in ("10.77.0.2/24", "10.77.1.2/24"):
            run("ip", "-n", ns, "addr", "add", address, "dev", ns_end)
        run("ip", "-n", ns, "link", "set", ns_end, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
