"""dnnlib.util's download policy: one time budget for all attempts, progress lines while waiting, DownloadError.

Every server here is a loopback listener the test opens itself and closes at the end.
"""

import http.server
import os
import sys
import threading
import time

import pytest

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]
from dnnlib import util  # noqa: E402
from loopback import PROXY_VARIABLES, SilentListener, closed_port  # noqa: E402


@pytest.fixture(autouse=True)
def _no_proxy_no_env(monkeypatch):
    """Loopback URLs must not go through a proxy of the machine; the budget comes from each test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv('DNNLIB_DOWNLOAD_TIMEOUT', raising=False)


@pytest.fixture
def silent():
    listener = SilentListener()
    yield listener
    listener.close()


def _download_threads():
    return [t for t in threading.enumerate() if t.name == 'dnnlib-download' and t.is_alive()]


def _manual_path(cache_dir, url):
    return os.path.join(str(cache_dir), f'{util.url_cache_key(url)}_{util._name_from_url(url)}')


def test_a_server_that_never_answers_costs_the_budget_and_names_the_cache_path(silent, tmp_path, capsys):
    url = silent.url()
    start = time.monotonic()
    with pytest.raises(util.DownloadError) as info:
        util.open_url(url, cache_dir=str(tmp_path), timeout_s=1.5)
    elapsed = time.monotonic() - start
    assert 1.4 < elapsed < 3.5, elapsed  # not 10 tries x 60 s
    message = str(info.value)
    assert url in message and 'no complete answer within 1.5 s' in message and 'DNNLIB_DOWNLOAD_TIMEOUT' in message
    assert message.endswith(f'place it at {_manual_path(tmp_path, url)}') and '\n' not in message
    lines = capsys.readouterr().out.splitlines()
    # A notice a third of the way and two thirds of the way (every 10 s for the default budget), then the end.
    assert lines == [f'Downloading {url} ... (waiting for the server, 0.5 s)',
                     f'Downloading {url} ... (waiting for the server, 1 s)',
                     f'Downloading {url} ... failed (no complete answer within 1.5 s)'], lines
    assert len(silent.connections) == 1  # a request that got no answer is not repeated within the budget
    # The abandoned attempt stops by itself: its read timeout never exceeds the budget.
    deadline = time.monotonic() + 5
    while _download_threads() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _download_threads()


def test_the_budget_comes_from_the_environment(silent, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('DNNLIB_DOWNLOAD_TIMEOUT', '1')
    start = time.monotonic()
    with pytest.raises(util.DownloadError, match='within 1 s'):
        util.open_url(silent.url(), cache_dir=str(tmp_path), verbose=False)
    assert time.monotonic() - start < 3
    assert capsys.readouterr().out == ''  # verbose=False prints nothing


@pytest.mark.parametrize('value', ['soon', '0', '-5', 'nan', 'inf'])
def test_a_bad_budget_in_the_environment_is_one_sentence(value, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_DOWNLOAD_TIMEOUT', value)
    with pytest.raises(util.DownloadError) as info:
        util.open_url(f'http://127.0.0.1:{closed_port()}/x.pkl', cache_dir=str(tmp_path), verbose=False)
    message = str(info.value)
    assert message.startswith(f'DNNLIB_DOWNLOAD_TIMEOUT={value} is not a positive number of seconds') and '\n' not in message


def test_a_body_that_trickles_stops_at_the_budget(tmp_path, capsys):
    listener = SilentListener(trickle=True)
    try:
        start = time.monotonic()
        with pytest.raises(util.DownloadError, match='no complete answer within 1.5 s'):
            util.open_url(listener.url(), cache_dir=str(tmp_path), timeout_s=1.5)
        assert time.monotonic() - start < 3
        out = capsys.readouterr().out
        assert ' of 1.0 MB, 0.5 s)' in out  # the notices report the bytes received so far
        assert os.listdir(tmp_path) == []  # nothing half-written in the cache
    finally:
        listener.close()


def test_refused_connections_are_retried_a_few_times_with_a_short_back_off(tmp_path, capsys):
    url = f'http://127.0.0.1:{closed_port()}/x.pkl'
    start = time.monotonic()
    with pytest.raises(util.DownloadError, match='ConnectionError'):
        util.open_url(url, cache_dir=str(tmp_path))  # the defaults: 10 attempts, 30 s
    assert time.monotonic() - start < 3.5  # an offline machine learns it within seconds, not after the whole budget
    assert capsys.readouterr().out.splitlines() == [
        f'Downloading {url} ... failed (ConnectionError), retrying in 0.25 s',
        f'Downloading {url} ... failed (ConnectionError), retrying in 0.5 s',
        f'Downloading {url} ... failed (ConnectionError), retrying in 1 s',
        f'Downloading {url} ... failed (ConnectionError)']


def test_a_retry_must_fit_in_the_budget(tmp_path, capsys):
    url = f'http://127.0.0.1:{closed_port()}/x.pkl'
    with pytest.raises(util.DownloadError, match='ConnectionError'):
        util.open_url(url, cache_dir=str(tmp_path), timeout_s=0.6)
    # After 0.25 s of pause, 0.35 s are left: a 0.5 s pause does not fit, so the download gives up at once.
    assert capsys.readouterr().out.splitlines() == [
        f'Downloading {url} ... failed (ConnectionError), retrying in 0.25 s',
        f'Downloading {url} ... failed (ConnectionError)']


BIG = 2_000_000


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /missing -> 404; GET /big -> 2 MB sent at about 1 MB/s."""
    requests = 0

    def do_GET(self):
        type(self).requests += 1
        if self.path == '/missing':
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header('Content-Length', str(BIG))
        self.end_headers()
        for _ in range(20):
            self.wfile.write(b'\x01' * (BIG // 20))
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.requests = 0
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def test_a_client_error_is_not_retried(server, tmp_path):
    start = time.monotonic()
    with pytest.raises(util.DownloadError, match='404'):
        util.open_url(f'{server}/missing', cache_dir=str(tmp_path), verbose=False, timeout_s=10)
    assert time.monotonic() - start < 2 and _Handler.requests == 1


def test_a_large_body_arriving_steadily_may_take_longer_than_the_budget(server, tmp_path):
    start = time.monotonic()
    path = util.open_url(f'{server}/big', cache_dir=str(tmp_path), verbose=False, timeout_s=1, return_filename=True)
    assert time.monotonic() - start > 1.5  # past the plain budget: the bytes earned the time
    assert os.path.getsize(path) == BIG and _Handler.requests == 1


# ----------------------------------------------------------------------------------------------
# The default budget, on a fake clock.


def test_the_default_budget_is_30_s_in_all_with_a_notice_every_10_s(tmp_path, monkeypatch, capsys):
    now = [1000.0]
    timeouts = []

    def fake_wait(event, seconds):
        assert 0 <= seconds <= 10
        now[0] += seconds
        return event.is_set()

    def never_answers(url, attempt_timeouts, state):
        timeouts.append(attempt_timeouts)
        state.cancelled.wait(5)  # what a hanging server looks like to the waiting thread
        raise TimeoutError('gave up')

    monkeypatch.setattr(util, '_clock', lambda: now[0])
    monkeypatch.setattr(util, '_wait', fake_wait)
    monkeypatch.setattr(util, '_fetch_once', never_answers)
    assert util.download_timeout_s == 30 and util.download_budget() == 30
    url = 'https://example.invalid/inception.pkl'
    with pytest.raises(util.DownloadError) as info:
        util.open_url(url, cache_dir=str(tmp_path))
    assert now[0] - 1000 == pytest.approx(30)
    assert timeouts == [(10.0, 30.0)]  # connect and read timeouts within the budget; one attempt
    assert 'no complete answer within 30 s' in str(info.value)
    assert capsys.readouterr().out.splitlines() == [f'Downloading {url} ... (waiting for the server, 10 s)',
                                                    f'Downloading {url} ... (waiting for the server, 20 s)',
                                                    f'Downloading {url} ... failed (no complete answer within 30 s)']


def test_attempt_timeouts_never_exceed_the_remaining_budget():
    assert util._attempt_timeouts(30) == (10, 30)
    assert util._attempt_timeouts(4) == (4, 4)
    connect, read = util._attempt_timeouts(0)
    assert 0 < connect <= 0.01 and 0 < read <= 0.01
