import hashlib
import http.server
import os
import pickle
import socket
import sys
import threading

import pytest

import dnnlib
from dnnlib import util


def test_easydict_attribute_access_and_pickle():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {"a": 1, "b": 2}
    del d.a
    assert "a" not in d
    with pytest.raises(AttributeError):
        d.missing
    loaded = pickle.loads(pickle.dumps(d))
    assert type(loaded) is dnnlib.EasyDict and loaded.b == 2
    assert util.EasyDict is dnnlib.EasyDict


@pytest.mark.parametrize("text, expected", [
    ("0-3,7", [0, 1, 2, 3, 7]),
    ("5", [5]),
    ("1,2, 10-12", [1, 2, 10, 11, 12]),
    ([4, 2], [4, 2]),
])
def test_parse_range(text, expected):
    assert util.parse_range(text) == expected


@pytest.mark.parametrize("text", ["a-b", "3-1", "1,,2"])
def test_parse_range_rejects_bad_input_with_a_message(text):
    with pytest.raises(ValueError, match="'"):
        util.parse_range(text)


def test_parse_range_refuses_more_numbers_than_the_limit_before_making_them():
    with pytest.raises(ValueError, match=r"^'0-4000000000' lists 4000000001 numbers, more than the 1000000 allowed"):
        util.parse_range("0-4000000000")  # would need > 100 GB as a list
    with pytest.raises(ValueError, match="1000001 numbers"):
        util.parse_range("0-999999,5")
    with pytest.raises(ValueError, match="more than the 2 allowed"):
        util.parse_range("1-3", max_count=2)
    assert len(util.parse_range("0-999999")) == util.MAX_RANGE_LENGTH == 1_000_000
    assert util.parse_range("0-9", max_count=None) == list(range(10))


def test_parse_vec2():
    assert util.parse_vec2("0.5,-1") == (0.5, -1.0)
    assert util.parse_vec2((1, 2)) == (1.0, 2.0)
    with pytest.raises(ValueError):
        util.parse_vec2("1,2,3")


@pytest.mark.parametrize("seconds, full, brief", [
    (12, "12s", "12s"),
    (3 * 60 + 5, "3m 05s", "3m 05s"),
    (2 * 3600 + 3 * 60 + 5, "2h 03m 05s", "2h 03m"),
    (4 * 86400 + 2 * 3600 + 3 * 60, "4d 02h 03m", "4d 02h"),
])
def test_format_time(seconds, full, brief):
    assert util.format_time(seconds) == full
    assert util.format_time_brief(seconds) == brief


def test_construct_and_call_by_name():
    od = util.construct_class_by_name([("a", 1)], class_name="collections.OrderedDict")
    assert list(od.items()) == [("a", 1)]
    assert util.call_func_by_name(9.0, func_name="math.sqrt") == 3.0
    assert util.get_obj_by_name("np.pi") == pytest.approx(3.141592653589793)
    assert util.get_obj_by_name("os.path.join") is os.path.join
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        util.get_obj_by_name("no_such_module_xyz.thing")


def test_import_error_inside_a_module_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "broken_mod_for_test.py").write_text("import not_installed_dependency_abc\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="not_installed_dependency_abc"):
        util.get_obj_by_name("broken_mod_for_test.X")


def test_cache_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "env"))
    assert util.make_cache_dir_path("downloads") == str(tmp_path / "env" / "downloads")
    util.set_cache_dir(str(tmp_path / "explicit"))
    try:
        assert util.make_cache_dir_path("x") == str(tmp_path / "explicit" / "x")
    finally:
        util.set_cache_dir(None)
    monkeypatch.delenv("DNNLIB_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert util.make_cache_dir_path() == str(tmp_path / "home" / ".cache" / "dnnlib")


def test_logger_tees_stdout_and_stderr(tmp_path):
    log = tmp_path / "log.txt"
    real_stdout = sys.stdout
    with util.Logger(file_name=str(log), file_mode="w"):
        print("hello")
        sys.stderr.write("oops\n")
    assert sys.stdout is real_stdout
    assert log.read_text() == "hello\noops\n"


def test_is_url():
    assert util.is_url("https://example.com/a.pkl")
    assert not util.is_url("/local/path.pkl")
    assert not util.is_url("http://localhost/a")  # The official rule wants a dotted host.
    assert util.is_url("file:///tmp/x", allow_file_urls=True)


# ----------------------------------------------------------------------------
# open_url against a real HTTP server on loopback.

class _Server:
    def __init__(self, directory):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=directory, **k)
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.requests = 0
        original = self.httpd.finish_request

        def counting(*a, **k):
            self.requests += 1
            return original(*a, **k)
        self.httpd.finish_request = counting
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_open_url_local_path_and_file_url(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"abc")
    with util.open_url(str(f)) as fp:
        assert fp.read() == b"abc"
    with util.open_url(f.as_uri()) as fp:
        assert fp.read() == b"abc"
    assert util.open_url(str(f), return_filename=True) == str(f)


def test_open_url_downloads_once_into_the_cache(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    payload = os.urandom(20000)
    (served / "net work.pkl").write_bytes(payload)
    server = _Server(str(served))
    cache = tmp_path / "cache"
    url = f"http://127.0.0.1:{server.port}/net%20work.pkl"
    try:
        with util.open_url(url, cache_dir=str(cache), verbose=False) as fp:
            assert fp.read() == payload
        assert server.requests == 1
        md5 = hashlib.md5(url.encode()).hexdigest()
        files = os.listdir(cache)
        assert files == [f"{md5}_net_20work.pkl"]  # No temporary file is left behind.
        name = util.open_url(url, cache_dir=str(cache), return_filename=True, verbose=False)
        assert open(name, "rb").read() == payload
        assert server.requests == 1  # Served from the cache.
        with util.open_url(url, cache_dir=str(cache), cache=False, verbose=False) as fp:
            assert fp.read() == payload
        assert server.requests == 2
    finally:
        server.stop()


def test_open_url_offline_names_url_and_manual_cache_path(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/models/net.pkl"
    cache = tmp_path / "cache"
    with pytest.raises(util.DownloadError) as info:
        util.open_url(url, cache_dir=str(cache), num_attempts=2, verbose=False)
    message = str(info.value)
    md5 = hashlib.md5(url.encode()).hexdigest()
    manual = os.path.join(str(cache), f"{md5}_net.pkl")
    assert url in message and manual in message
    # Following the advice works.
    os.makedirs(cache)
    with open(manual, "wb") as f:
        f.write(b"placed by hand")
    with util.open_url(url, cache_dir=str(cache), verbose=False) as fp:
        assert fp.read() == b"placed by hand"


def test_open_url_uses_dnnlib_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "c"))
    url = f"http://127.0.0.1:{_closed_port()}/x.pkl"
    with pytest.raises(util.DownloadError, match=str(tmp_path / "c" / "downloads")):
        util.open_url(url, num_attempts=1, verbose=False)
