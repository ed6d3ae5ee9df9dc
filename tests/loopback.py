"""Loopback listeners for network tests: opened by the test itself on 127.0.0.1, closed at its end."""

import socket
import threading
import time

PROXY_VARIABLES = ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY', 'no_proxy', 'NO_PROXY')


class SilentListener:
    """Accepts TCP connections and never answers (a hanging server or proxy); `trickle`: headers, then a byte at a time."""

    def __init__(self, trickle=False):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.trickle = trickle
        self.connections = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the 0.1 s accept timeout: look at `stopped` again
                continue
            self.connections.append(conn)
            if self.trickle:
                threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        try:
            conn.settimeout(5)
            conn.recv(65536)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n')
            while not self.stopped.is_set():
                conn.sendall(b'x')
                time.sleep(0.05)
        except OSError:
            pass

    def url(self, name='inception.pkl'):
        return f'http://127.0.0.1:{self.port}/{name}'

    def close(self):
        self.stopped.set()
        self.thread.join(timeout=5)
        for conn in self.connections:
            conn.close()
        self.sock.close()


def closed_port():
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
