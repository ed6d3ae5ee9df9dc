"""The visualizer's HTTP server: the page, its static files, and a small JSON + PNG API.

Python's standard library serves it (http.server's ThreadingHTTPServer): the API is four routes of
JSON in and JSON or PNG out, with no streaming, so a web framework would add a dependency and
nothing the page needs.

Routes:
  GET  /                     the page (viz/static/index.html)
  GET  /static/NAME          a file of viz/static, by exact name (nothing outside that folder, no sub-paths)
  GET  /api/networks         [{id, label, kind, snapshots?}]: the networks named at launch
  GET  /api/network?id=ID    what the page may show for that network (viz.renderer.describe)
  POST /api/render           settings (JSON, viz.renderer) with `network`, `client` and `seq` ->
                             image/png, with X-Render-Ms (the frame's render time), X-Seq, and for a
                             layer X-Layer-Stats (JSON: mean, std, largest magnitude of all and shown channels)
Errors are JSON {"error": one sentence} with a 4xx/5xx status; the server goes on serving.

Safety: with a token (always when listening beyond the loopback), every /api request must carry it
(header X-Viz-Token, or ?token=); without one, requests must name a loopback Host (so that a web page
elsewhere cannot reach the API through DNS rebinding). Request bodies, render sizes
(viz.renderer.MAX_SIDE), each client's request rate and the number of waiting renders are bounded.
Renders run one at a time; a render request that is no longer its client's newest when its turn
comes is answered 409 (superseded) without rendering, so a dragged slider never builds a queue.
"""

import hmac
import http.server
import json
import mimetypes
import os
import sys
import threading
import time
import traceback
import urllib.parse

from training import generation
from viz.catalogue import CatalogueError
from viz.renderer import SettingsError, encode_png

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
MAX_BODY = 64 * 1024           # bytes of a render request
MAX_WAITING = 4                # render requests waiting for the renderer at once
MAX_CLIENTS = 1024             # clients whose newest request number is remembered
RATE = 30.0                    # render requests per second per client (burst: twice that)
LOOPBACK_HOSTS = ('127.0.0.1', 'localhost', '[::1]', '::1')


class _RequestError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class _RateLimiter:
    """A token bucket per client: RATE requests per second, bursts of 2 * RATE."""

    def __init__(self, rate=RATE):
        self.rate, self.capacity = rate, 2 * rate
        self.buckets = {}
        self.lock = threading.Lock()

    def allow(self, client):
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if len(self.buckets) >= MAX_CLIENTS and client not in self.buckets:
                self.buckets.pop(next(iter(self.buckets)))
            allowed = tokens >= 1
            self.buckets[client] = (tokens - 1 if allowed else tokens, now)
            return allowed


class VisualizerApp:
    """The state the handlers share: the catalogue, the token, the render queue."""

    def __init__(self, catalogue, token=None, rate=RATE, max_waiting=MAX_WAITING):
        self.catalogue = catalogue
        self.token = token
        self.limiter = _RateLimiter(rate)
        self.max_waiting = max_waiting
        self.render_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.waiting = 0
        self.newest = {}  # client -> newest request number seen
        self.static_files = sorted(name for name in os.listdir(STATIC_DIR)
                                   if os.path.isfile(os.path.join(STATIC_DIR, name)))

    # ------------------------------------------------------------------------------------------

    def note_request(self, client, seq):
        with self.state_lock:
            if len(self.newest) >= MAX_CLIENTS and client not in self.newest:
                self.newest.pop(next(iter(self.newest)))
            self.newest[client] = max(seq, self.newest.get(client, seq))

    def is_newest(self, client, seq):
        with self.state_lock:
            return self.newest.get(client, seq) <= seq

    def render(self, body):
        """(PNG bytes, milliseconds, seq, layer stats or None) of a render request body (parsed JSON)."""
        if not isinstance(body, dict):
            raise _RequestError(400, 'A render request is a JSON object of settings.')
        client = str(body.get('client', ''))[:64] or 'anonymous'
        seq = body.get('seq', 0)
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise _RequestError(400, 'seq must be an integer (the request number of the page).')
        if not self.limiter.allow(client):
            raise _RequestError(429, 'Too many render requests; slow down.')
        self.note_request(client, seq)
        with self.state_lock:
            if self.waiting >= self.max_waiting:
                raise _RequestError(503, 'The renderer is busy; try again.')
            self.waiting += 1
        try:
            with self.render_lock:
                if not self.is_newest(client, seq):
                    raise _RequestError(409, 'superseded by a newer request')
                renderer = self.catalogue.renderer(body.get('network', '0'))
                pixels, milliseconds, stats = renderer.render(body)
                return encode_png(pixels), milliseconds, seq, stats
        finally:
            with self.state_lock:
                self.waiting -= 1


def _is_loopback(host_header):
    host = (host_header or '').strip().lower()
    if host.startswith('['):
        host = host.split(']')[0] + ']'
    else:
        host = host.rsplit(':', 1)[0] if host.count(':') == 1 else host
    return host in LOOPBACK_HOSTS


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'raycond-visualizer'
    timeout = 30  # seconds for a client to send its request
    app = None    # VisualizerApp, set by make_server

    def log_message(self, format, *args):  # quiet: errors are reported in the responses
        pass

    # ------------------------------------------------------------------------------------------

    def _send(self, status, body, content_type, headers=()):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _json(self, status, data):
        self._send(status, json.dumps(data).encode('utf-8'), 'application/json')

    def _error(self, status, message):
        self._json(status, {'error': str(message)})

    def _check_access(self, query):
        app = self.app
        if app.token is None:
            if not _is_loopback(self.headers.get('Host')):
                raise _RequestError(403, 'This visualizer answers only requests addressed to the loopback host.')
            return
        given = self.headers.get('X-Viz-Token') or (query.get('token') or [''])[0]
        if not hmac.compare_digest(given.encode('utf-8'), app.token.encode('utf-8')):
            raise _RequestError(403, 'A valid token is required (the one printed when the visualizer started).')

    def _dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path
        try:
            if method in ('GET', 'HEAD') and path in ('/', '/index.html'):
                return self._static('index.html')
            if method in ('GET', 'HEAD') and path.startswith('/static/'):
                return self._static(urllib.parse.unquote(path[len('/static/'):]))
            if not path.startswith('/api/'):
                raise _RequestError(404, f'No such page: {path}')
            self._check_access(query)
            if method == 'GET' and path == '/api/networks':
                return self._json(200, {'networks': self.app.catalogue.listing()})
            if method == 'GET' and path == '/api/network':
                network = (query.get('id') or ['0'])[0]
                return self._json(200, self.app.catalogue.renderer(network).description | {'id': network})
            if method == 'POST' and path == '/api/render':
                png, milliseconds, seq, stats = self.app.render(self._body())
                headers = [('X-Render-Ms', f'{milliseconds:.1f}'), ('X-Seq', str(seq))]
                if stats is not None:
                    headers.append(('X-Layer-Stats', json.dumps(stats)))
                return self._send(200, png, 'image/png', headers)
            if path in ('/api/networks', '/api/network', '/api/render'):
                raise _RequestError(405, f'{method} is not accepted on {path}.')
            raise _RequestError(404, f'No such API route: {path}')
        except _RequestError as error:
            self._error(error.status, error)
        except (CatalogueError, SettingsError, generation.GenerationError) as error:
            self._error(400, error)
        except Exception as error:  # a bug or a failing network: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            self._error(500, f'The render failed: {type(error).__name__}: {error}')

    def _body(self):
        length = self.headers.get('Content-Length')
        if length is None or not length.isdigit():
            raise _RequestError(411, 'A render request needs a Content-Length.')
        if int(length) > MAX_BODY:
            raise _RequestError(413, f'A render request is at most {MAX_BODY} bytes.')
        data = self.rfile.read(int(length))
        try:
            return json.loads(data.decode('utf-8'))
        except (UnicodeDecodeError, ValueError):
            raise _RequestError(400, 'The render request is not valid JSON.') from None

    def _static(self, name):
        if name not in self.app.static_files:  # exact names only: no '..', no sub-folders, no absolute paths
            raise _RequestError(404, f'No such file: {name}')
        with open(os.path.join(STATIC_DIR, name), 'rb') as f:
            data = f.read()
        content_type = mimetypes.guess_type(name)[0] or 'application/octet-stream'
        if content_type.startswith('text/') or content_type.endswith('javascript'):
            content_type += '; charset=utf-8'
        self._send(200, data, content_type)

    def do_GET(self):
        self._dispatch('GET')

    def do_HEAD(self):
        self._dispatch('HEAD')

    def do_POST(self):
        self._dispatch('POST')


class VisualizerServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(app, host='127.0.0.1', port=0):
    """A VisualizerServer for `app` on (host, port) (port 0: a free one); serve it with serve_forever()."""
    handler = type('BoundHandler', (Handler,), {'app': app})
    return VisualizerServer((host, port), handler)
