"""Helpers that know nothing of torch: EasyDict, cache directories, URL download cache,
construct/call by dotted name, stdout/stderr tee, time formatting and CLI value parsing.

The public names here are a compatibility surface: official network pickles reference
`dnnlib.util.EasyDict` by name, and code embedded in them may call the other helpers.
"""

import ctypes
import hashlib
import importlib
import inspect
import io
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import types
import urllib.parse
import uuid
from typing import Any, List, Optional, Tuple


class EasyDict(dict):
    """A dict whose keys are also attributes. Official pickles name this class as `dnnlib.util.EasyDict`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


# ----------------------------------------------------------------------------
# Logging.

class Logger:
    """Tees everything written to stdout and stderr into an optional file.

    stderr is merged into the same stream so that `log.txt` reads like the terminal did.
    Loggers nest: closing one restores the streams only if it is still the one installed.
    """

    def __init__(self, file_name: Optional[str] = None, file_mode: str = "w", should_flush: bool = True):
        self.file = open(file_name, file_mode) if file_name is not None else None
        self.should_flush = should_flush
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        sys.stdout = self
        sys.stderr = self

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.close()

    def write(self, text) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        if len(text) == 0:  # Some debuggers write empty strings constantly; skip the needless flushes.
            return
        if self.file is not None:
            self.file.write(text)
        self.stdout.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()
        self.stdout.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stdout, "isatty", lambda: False)())

    def close(self) -> None:
        self.flush()
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None


# ----------------------------------------------------------------------------
# Cache directories.

_dnnlib_cache_dir = None


def set_cache_dir(path: Optional[str]) -> None:
    global _dnnlib_cache_dir
    _dnnlib_cache_dir = path


def make_cache_dir_path(*paths: str) -> str:
    """Path inside the cache: set_cache_dir() > $DNNLIB_CACHE_DIR > ~/.cache/dnnlib > <tmp>/.cache/dnnlib."""
    if _dnnlib_cache_dir is not None:
        return os.path.join(_dnnlib_cache_dir, *paths)
    if "DNNLIB_CACHE_DIR" in os.environ:
        return os.path.join(os.environ["DNNLIB_CACHE_DIR"], *paths)
    if "HOME" in os.environ:
        return os.path.join(os.environ["HOME"], ".cache", "dnnlib", *paths)
    if "USERPROFILE" in os.environ:
        return os.path.join(os.environ["USERPROFILE"], ".cache", "dnnlib", *paths)
    return os.path.join(tempfile.gettempdir(), ".cache", "dnnlib", *paths)


# ----------------------------------------------------------------------------
# Small utilities.

def _time_units(seconds) -> List[str]:
    s = int(round(seconds))
    if s < 60:
        return [f"{s}s"]
    if s < 60 * 60:
        return [f"{s // 60}m", f"{s % 60:02}s"]
    if s < 24 * 60 * 60:
        return [f"{s // 3600}h", f"{(s // 60) % 60:02}m", f"{s % 60:02}s"]
    return [f"{s // 86400}d", f"{(s // 3600) % 24:02}h", f"{(s // 60) % 60:02}m"]


def format_time(seconds) -> str:
    """'12s', '3m 05s', '2h 03m 05s' or '4d 02h 03m'."""
    return " ".join(_time_units(seconds))


def format_time_brief(seconds) -> str:
    """At most two units: '12s', '3m 05s', '2h 03m', '4d 02h'."""
    return " ".join(_time_units(seconds)[:2])


def ask_yes_no(question: str) -> bool:
    while True:
        answer = input(f"{question} [y/n] ").strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


def tuple_product(t: Tuple) -> Any:
    result = 1
    for v in t:
        result *= v
    return result


_str_to_ctype = {
    "uint8": ctypes.c_ubyte, "uint16": ctypes.c_uint16, "uint32": ctypes.c_uint32, "uint64": ctypes.c_uint64,
    "int8": ctypes.c_byte, "int16": ctypes.c_int16, "int32": ctypes.c_int32, "int64": ctypes.c_int64,
    "float32": ctypes.c_float, "float64": ctypes.c_double,
}


def get_dtype_and_ctype(type_obj: Any) -> Tuple[Any, Any]:
    """The numpy dtype and the matching ctypes type for a type given as a string, numpy dtype or ctypes type."""
    import numpy as np
    if isinstance(type_obj, str):
        name = type_obj
    elif hasattr(type_obj, "__name__") and not isinstance(type_obj, np.dtype) and type_obj.__name__ in _str_to_ctype:
        name = type_obj.__name__
    elif hasattr(type_obj, "name"):
        name = type_obj.name
    else:
        name = {v: k for k, v in _str_to_ctype.items()}.get(type_obj)
    if name not in _str_to_ctype:
        raise ValueError(f"Cannot map type {type_obj!r} to a numpy/ctypes type.")
    my_dtype = np.dtype(name)
    my_ctype = _str_to_ctype[name]
    assert my_dtype.itemsize == ctypes.sizeof(my_ctype)
    return my_dtype, my_ctype


def is_pickleable(obj: Any) -> bool:
    import pickle
    try:
        with io.BytesIO() as stream:
            pickle.dump(obj, stream)
        return True
    except Exception:
        return False


MAX_RANGE_LENGTH = 1_000_000  # numbers parse_range expands by default: --seeds gives at most this many images per call


def parse_range(s, max_count=MAX_RANGE_LENGTH) -> List[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]; a list of ints is returned as it is.

    More than `max_count` numbers (None: no limit) is an error, found before any number is made:
    '0-4000000000' is refused instead of filling the memory.
    """
    if isinstance(s, list):
        return s
    if isinstance(s, int):
        return [s]
    parts, count = [], 0
    for part in str(s).split(","):
        part = part.strip()
        match = re.fullmatch(r"(-?\d+)-(-?\d+)", part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ValueError(f"Range '{part}' ends before it starts; write it as '{hi}-{lo}'.")
            parts.append((lo, hi))
        elif re.fullmatch(r"-?\d+", part):
            parts.append((int(part), int(part)))
        else:
            raise ValueError(f"Cannot parse '{part}' in '{s}': expected integers or ranges like '0-3,7'.")
        count += parts[-1][1] - parts[-1][0] + 1
    if max_count is not None and count > max_count:
        raise ValueError(f"'{s}' lists {count} numbers, more than the {max_count} allowed at once; "
                         f"pass a shorter range (several calls for more).")
    return [number for lo, hi in parts for number in range(lo, hi + 1)]


def parse_vec2(s) -> Tuple[float, float]:
    """'0.5,-1' -> (0.5, -1.0); a 2-tuple is returned as it is."""
    if isinstance(s, tuple) and len(s) == 2:
        return (float(s[0]), float(s[1]))
    parts = str(s).split(",")
    if len(parts) == 2:
        try:
            return (float(parts[0]), float(parts[1]))
        except ValueError:
            pass
    raise ValueError(f"Cannot parse '{s}' as a 2-vector: expected two numbers like '0.5,-1'.")


def parse_grid_size(s) -> Tuple[int, int]:
    """'8x4' -> (8, 4): columns x rows, both positive."""
    match = re.fullmatch(r"(\d+)x(\d+)", str(s).strip().lower())
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValueError(f"'{s}' must look like COLUMNSxROWS, e.g. 8x4.")
    return int(match.group(1)), int(match.group(2))


def parse_float_list(s, count=None) -> List[float]:
    """'0.1,-0.2' -> [0.1, -0.2] (finite numbers only; exactly `count` of them when given)."""
    try:
        values = [float(part) for part in str(s).split(",")]
    except ValueError:
        values = []
    if not values or (count is not None and len(values) != count) or not all(math.isfinite(v) for v in values):
        expected = f"{count} comma-separated finite numbers" if count else "comma-separated finite numbers"
        raise ValueError(f"Cannot parse '{s}': expected {expected}, e.g. '{','.join(['0.5'] * (count or 2))}'.")
    return values


# ----------------------------------------------------------------------------
# Functionality to import modules/objects by name, and call functions/construct classes by name.

def get_module_from_obj_name(obj_name: str) -> Tuple[types.ModuleType, str]:
    """Split 'pkg.module.attr.sub' into the longest importable module and the remaining attribute path."""
    # Shorthands that configs written for the official code use.
    obj_name = re.sub(r"^np\.", "numpy.", obj_name)
    obj_name = re.sub(r"^tf\.", "tensorflow.", obj_name)
    parts = obj_name.split(".")
    candidates = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts), 0, -1)]

    for module_name, local_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Only "this prefix is not a module" means: try a shorter prefix. An import error raised
            # inside the user's own module must surface, not hide behind a generic message.
            if err.name is None or not (module_name + ".").startswith(err.name + "."):
                raise
            continue
        try:
            get_obj_from_module(module, local_name)
        except AttributeError:
            continue
        return module, local_name
    raise ImportError(f"Cannot find '{obj_name}': no importable module defines it.")


def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    if obj_name == "":
        return module
    obj = module
    for part in obj_name.split("."):
        obj = getattr(obj, part)
    return obj


def get_obj_by_name(name: str) -> Any:
    module, obj_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, obj_name)


def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    assert func_name is not None
    func_obj = get_obj_by_name(func_name)
    if not callable(func_obj):
        raise TypeError(f"'{func_name}' is not callable.")
    return func_obj(*args, **kwargs)


def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_module_dir_by_obj_name(obj_name: str) -> str:
    module, _ = get_module_from_obj_name(obj_name)
    return os.path.dirname(inspect.getfile(module))


def is_top_level_function(obj: Any) -> bool:
    return callable(obj) and obj.__name__ in sys.modules[obj.__module__].__dict__


def get_top_level_function_name(obj: Any) -> str:
    assert is_top_level_function(obj)
    module = obj.__module__
    if module == "__main__":
        module = os.path.splitext(os.path.basename(sys.modules[module].__file__))[0]
    return module + "." + obj.__name__


# ----------------------------------------------------------------------------
# File system helpers.

def list_dir_recursively_with_ignore(dir_path: str, ignores: List[str] = None, add_base_to_relative: bool = False) -> List[Tuple[str, str]]:
    """(absolute path, relative path) of every file below dir_path, skipping names that match `ignores` globs."""
    import fnmatch
    assert os.path.isdir(dir_path)
    base_name = os.path.basename(os.path.normpath(dir_path))
    ignores = ignores or []
    result = []
    for root, dirs, files in os.walk(dir_path, topdown=True):
        for pattern in ignores:
            dirs[:] = [d for d in dirs if not fnmatch.fnmatch(d, pattern)]
            files = [f for f in files if not fnmatch.fnmatch(f, pattern)]
        absolute = [os.path.join(root, f) for f in files]
        relative = [os.path.relpath(p, dir_path) for p in absolute]
        if add_base_to_relative:
            relative = [os.path.join(base_name, p) for p in relative]
        result.extend(zip(absolute, relative))
    return result


def copy_files_and_create_dirs(files: List[Tuple[str, str]]) -> None:
    for src, dst in files:
        target_dir = os.path.dirname(dst)
        if target_dir:
            os.makedirs(target_dir, exist_ok=True)
        shutil.copyfile(src, dst)


# ----------------------------------------------------------------------------
# URL helpers.

def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """True for 'scheme://host.domain/...' strings (and 'file://...' when allowed)."""
    if not isinstance(obj, str) or "://" not in obj:
        return False
    if allow_file_urls and obj.startswith("file://"):
        return True
    try:
        res = urllib.parse.urlparse(obj)
        if not res.scheme or not res.netloc or "." not in res.netloc:
            return False
        res = urllib.parse.urlparse(urllib.parse.urljoin(obj, "/"))
        if not res.scheme or not res.netloc or "." not in res.netloc:
            return False
    except Exception:
        return False
    return True


class DownloadError(IOError):
    """A URL could not be fetched; the message names the URL and where to place the file by hand."""


def _file_url_to_path(url: str) -> str:
    path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    if re.match(r"^/[a-zA-Z]:", path):  # 'file:///C:/dir/x' on Windows.
        path = path[1:]
    return path


def url_cache_key(url: str) -> str:
    return hashlib.md5(url.encode("utf-8")).hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z\-._]", "_", name) or "download"


def _name_from_url(url: str) -> str:
    return _safe_name(os.path.basename(urllib.parse.urlparse(url).path))


def _find_cached(cache_dir: str, url_md5: str) -> Optional[str]:
    if not os.path.isdir(cache_dir):
        return None
    hits = [n for n in os.listdir(cache_dir) if n.startswith(url_md5 + "_")]
    return os.path.join(cache_dir, hits[0]) if len(hits) == 1 else None


# The download policy. One download, all its attempts together, gives up `download_timeout_s` seconds
# after it started ($DNNLIB_DOWNLOAD_TIMEOUT overrides the setting, open_url(timeout_s=) both), so a
# network that accepts connections but never answers costs half a minute, not ten. Body bytes earn
# extra time at `download_min_rate` bytes/s: a large file arriving at least that fast completes, a
# body that trickles slower does not. Connect and read timeouts never exceed the remaining budget.
download_timeout_s = 30.0
download_min_rate = 64 * 1024
_CONNECT_TIMEOUT_S = 10.0   # a connection not made by then is retried (with a short back-off)
_MAX_PAUSES_S = 2.0         # back-offs of 0.25, 0.5 and 1 s: an offline machine knows within seconds
_NOTICE_EVERY_S = 10.0      # verbose: one progress line this often while a download waits (a third of shorter budgets)
_CHUNK_BYTES = 1 << 16
_clock = time.monotonic
_wait = lambda event, seconds: event.wait(seconds)  # noqa: E731 (tests replace both with a fake clock)


def download_budget(timeout_s: Optional[float] = None) -> float:
    """Seconds one download may take: `timeout_s` when given, else $DNNLIB_DOWNLOAD_TIMEOUT, else download_timeout_s."""
    if timeout_s is not None:
        assert math.isfinite(timeout_s) and timeout_s > 0, f"timeout_s={timeout_s} must be a positive number of seconds"
        return float(timeout_s)
    text = os.environ.get("DNNLIB_DOWNLOAD_TIMEOUT", "").strip()
    if not text:
        return float(download_timeout_s)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise DownloadError(f"DNNLIB_DOWNLOAD_TIMEOUT={text} is not a positive number of seconds; set it to, "
                            f"e.g., 120 or unset it for the default of {download_timeout_s:g}.")
    return value


def _attempt_timeouts(remaining: float) -> Tuple[float, float]:
    """(connect, read) timeouts for one request with `remaining` seconds of the budget left."""
    remaining = max(remaining, 0.01)
    return min(_CONNECT_TIMEOUT_S, remaining), remaining


class _DownloadState:
    """Shared by the waiting thread and the thread that fetches."""

    def __init__(self, budget: float):
        self.start = _clock()
        self.budget = budget
        self.earned_bytes = 0   # every body byte of every attempt, for the time it earns
        self.received = 0       # body bytes of the current attempt
        self.total = None       # its Content-Length
        self.cancelled = threading.Event()

    def elapsed(self) -> float:
        return _clock() - self.start

    def remaining(self) -> float:
        return self.budget + self.earned_bytes / download_min_rate - self.elapsed()


class _ProgressLine:
    """'Downloading URL ... done' on one line; each notice or retry ends the line and is a line of its own."""

    def __init__(self, url: str, verbose: bool):
        self.head = f"Downloading {url} ..."
        self.verbose = verbose
        self.open = False

    def begin(self) -> None:
        if self.verbose:
            print(self.head, end="", flush=True)
            self.open = True

    def say(self, text: str) -> None:
        if self.verbose:
            print(f" {text}" if self.open else f"{self.head} {text}", flush=True)
            self.open = False


def _fetch_once(url: str, timeouts: Tuple[float, float], state: _DownloadState) -> Tuple[bytes, str]:
    """One request, the body streamed in chunks; stops when the waiting thread gives up."""
    import requests
    with requests.get(url, timeout=timeouts, stream=True) as res:
        res.raise_for_status()
        length = res.headers.get("Content-Length", "")
        state.received, state.total = 0, (int(length) if length.isdigit() else None)
        read1 = getattr(res.raw, "read1", None)  # urllib3 >= 2: returns after one read of the socket
        chunks = iter(lambda: read1(_CHUNK_BYTES, decode_content=True) or b"", b"") if read1 else \
            res.iter_content(_CHUNK_BYTES)
        body = []
        for chunk in chunks:
            if state.cancelled.is_set():
                raise TimeoutError("given up")
            body.append(chunk)
            state.received += len(chunk)
            state.earned_bytes += len(chunk)
        data = b"".join(body)
        if len(data) == 0:
            raise IOError("the server sent an empty body")
        name = _name_from_url(url)
        match = re.search(r'filename="?([^";]+)"?', res.headers.get("Content-Disposition", ""))
        if match:
            name = _safe_name(match.group(1))
        return data, name


def _worth_retrying(err: BaseException) -> bool:
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return False  # 404, 403, ...: asking again gives the same answer
    return not isinstance(err, ValueError)  # requests' InvalidURL, MissingSchema, ...


def _short(err: BaseException) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    return f"HTTP {status}" if status is not None else type(err).__name__


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def _download(url: str, num_attempts: int, verbose: bool, timeout_s: Optional[float] = None) -> Tuple[bytes, str]:
    """Fetch url under the download policy above; returns (body, file name suggested by the server or the URL).

    Each attempt runs in a daemon thread while this one waits, printing a notice every _NOTICE_EVERY_S
    when verbose, so that the budget holds even where requests' timeouts do not reach (name lookup, a
    slow trickle). Raises the last attempt's error, or TimeoutError when the budget ran out first.
    """
    state = _DownloadState(download_budget(timeout_s))
    line = _ProgressLine(url, verbose)
    every = min(_NOTICE_EVERY_S, state.budget / 3)
    next_notice = every
    last_error = None
    paused = 0.0
    try:
        for attempt in range(num_attempts):
            outcome = {}
            done = threading.Event()

            def fetch(timeouts=_attempt_timeouts(state.remaining()), outcome=outcome, done=done):
                try:
                    outcome["result"] = _fetch_once(url, timeouts, state)
                except BaseException as err:  # handed to the waiting thread
                    outcome["error"] = err
                finally:
                    done.set()

            next_notice = max(next_notice, (state.elapsed() // every + 1) * every)  # no notice for a back-off
            line.begin()
            threading.Thread(target=fetch, name="dnnlib-download", daemon=True).start()
            while not done.is_set() and state.remaining() > 0:
                if state.elapsed() >= next_notice:
                    got = f"{state.received / 1e6:.1f}" + (f" of {state.total / 1e6:.1f}" if state.total else "")
                    line.say(f"({got} MB, {_seconds(next_notice)} s)" if state.received else
                             f"(waiting for the server, {_seconds(next_notice)} s)")
                    next_notice = (state.elapsed() // every + 1) * every
                _wait(done, max(0.0, min(state.remaining(), next_notice - state.elapsed())))
            if not done.is_set():
                waited = _seconds(state.elapsed())
                line.say(f"failed (no complete answer within {waited} s)")
                last_error = TimeoutError(f"no complete answer within {waited} s; "
                                          f"DNNLIB_DOWNLOAD_TIMEOUT=SECONDS allows longer")
                break
            if "result" in outcome:
                line.say("done")
                return outcome["result"]
            last_error = outcome["error"]
            pause = 0.25 * 2 ** attempt
            if attempt + 1 < num_attempts and _worth_retrying(last_error) and state.remaining() > pause and \
                    paused + pause <= _MAX_PAUSES_S:
                line.say(f"failed ({_short(last_error)}), retrying in {pause:g} s")
                time.sleep(pause)
                paused += pause
            else:
                line.say(f"failed ({_short(last_error)})")
                break
    except KeyboardInterrupt:
        line.say("interrupted")  # ends the progress line before the caller's message
        raise
    finally:
        state.cancelled.set()  # an attempt still running stops at its next chunk
    raise last_error


def open_url(url: str, cache_dir: str = None, num_attempts: int = 10, verbose: bool = True,
             return_filename: bool = False, cache: bool = True, timeout_s: Optional[float] = None) -> Any:
    """Open a local path, a file:// URL or an http(s):// URL; remote files go through a download cache.

    Returns a binary file object, or the local file name when return_filename=True (needs cache=True
    for URLs). Downloads are keyed by the MD5 of the URL and written to a temporary name, then renamed,
    so an interrupted download never leaves a truncated file in the cache. A download gives up after
    `timeout_s` seconds in all (default: $DNNLIB_DOWNLOAD_TIMEOUT, else download_timeout_s; see the
    download policy above) and raises DownloadError, which names the cache path to fill by hand.
    """
    assert num_attempts >= 1
    assert not (return_filename and not cache), "return_filename=True needs cache=True"

    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", url):
        return url if return_filename else open(url, "rb")
    if url.startswith("file://"):
        path = _file_url_to_path(url)
        return path if return_filename else open(path, "rb")
    assert is_url(url), f"Not a URL: {url}"

    if cache_dir is None:
        cache_dir = make_cache_dir_path("downloads")
    url_md5 = url_cache_key(url)
    if cache:
        cached = _find_cached(cache_dir, url_md5)
        if cached is not None:
            return cached if return_filename else open(cached, "rb")

    budget = download_budget(timeout_s)  # a bad $DNNLIB_DOWNLOAD_TIMEOUT is a DownloadError of its own
    try:
        data, name = _download(url, num_attempts, verbose, timeout_s=budget)
    except Exception as err:
        manual_path = os.path.join(cache_dir, f"{url_md5}_{_name_from_url(url)}")
        raise DownloadError(
            f"Could not download {url} ({type(err).__name__}: {err}); if this machine is offline, "
            f"fetch the file elsewhere and place it at {manual_path}") from None

    if cache:
        os.makedirs(cache_dir, exist_ok=True)
        cache_file = os.path.join(cache_dir, f"{url_md5}_{name}")
        temp_file = os.path.join(cache_dir, f"tmp_{uuid.uuid4().hex}_{url_md5}_{name}")
        with open(temp_file, "wb") as f:
            f.write(data)
        os.replace(temp_file, cache_file)
        if return_filename:
            return cache_file
    return io.BytesIO(data)
