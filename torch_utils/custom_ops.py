"""Just-in-time builds of the C++/CUDA op plugins through torch.utils.cpp_extension and ninja.

`get_plugin` keeps the official signature and behaviour: one build directory per distinct set of
sources (`<root>/<module_name>/<md5>-<gpu name or 'cpu'>`), sources copied there atomically so that
ninja sees stable names and timestamps, one build per process, a one-line progress message.

Two additions address the most common complaints about the official build:
- A stale build lock (left by a killed build) is detected instead of waited on forever: it is
  removed when its owner provably died on this host, else reported with the path to delete once it is
  older than `stale_lock_timeout` seconds.
- `try_get_plugin` returns None instead of raising, after one warning saying the op falls back to
  its slower pure-PyTorch reference path and why.

The ops' CUDA kernels are opt-in (`cuda_kernels_enabled()`); while they are disabled, the first CUDA
tensor that reaches an op's dispatch prints one line per process saying that the ops run their
reference path (`note_reference_path`).
"""

import glob
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
import warnings

import torch
import torch.utils.cpp_extension

#----------------------------------------------------------------------------

verbosity = 'brief'         # 'none', 'brief' or 'full'
stale_lock_timeout = 600.0  # seconds a build lock may exist before it is reported as stale
lock_poll_interval = 0.5    # seconds between looks at a build lock held by someone else

_LOCK_NAME = 'lock'          # the FileBaton torch.utils.cpp_extension creates in the build directory
_OWNER_NAME = 'lock.owner'   # our own lock next to it, naming the building process

class PluginBuildError(RuntimeError):
    """A plugin could not be built or loaded."""

class StaleBuildLockError(PluginBuildError):
    """A build lock has been held for too long by a process that is probably gone."""

class PluginFallbackWarning(UserWarning):
    """An op plugin is unavailable, so the op runs its reference implementation."""

# The ops' CUDA kernels are opt-in until they have been verified on a GPU (parity tests and the
# benchmark of bench/ops_cuda.py): RAYCOND_CUDA_KERNELS=1 enables them.
CUDA_KERNELS_ENV = 'RAYCOND_CUDA_KERNELS'

def cuda_kernels_enabled():
    """Whether ops may build and use their CUDA kernels (environment variable RAYCOND_CUDA_KERNELS=1)."""
    return os.environ.get(CUDA_KERNELS_ENV, '0').strip() == '1'

# The ops in torch_utils/ops that have CUDA kernels; each calls note_reference_path from its dispatch.
KERNEL_OPS = ('bias_act', 'upfirdn2d', 'filtered_lrelu')

_reference_path_noted = False  # whether note_reference_path has printed its line in this process

_cached_plugins = dict()  # module_name => module
_failed_plugins = dict()  # module_name => reason (try_get_plugin only)

#----------------------------------------------------------------------------
# Build directory.

def _mangled_gpu_name():
    if not torch.cuda.is_available():
        return 'cpu'
    name = torch.cuda.get_device_name().lower()
    return ''.join(c if c in '_-' or (c.isascii() and c.isalnum()) else '-' for c in name)

def get_build_root():
    """`TORCH_EXTENSIONS_DIR` when set, else PyTorch's per-user cache, split by Python and toolkit version."""
    root = os.environ.get('TORCH_EXTENSIONS_DIR')
    if root:
        return root
    accelerator = f'cu{torch.version.cuda.replace(".", "")}' if torch.version.cuda else 'cpu'
    python = f'py{sys.version_info.major}{sys.version_info.minor}'
    return os.path.join(torch.utils.cpp_extension.get_default_build_root(), f'{python}_{accelerator}')

def _source_paths(sources, headers, source_dir):
    paths = list(sources) + list(headers or [])
    if source_dir is not None:
        paths = [os.path.join(source_dir, path) for path in paths]
    return paths

def source_digest(paths):
    """MD5 over the names and bytes of `paths` in sorted order, plus the torch version the build links to."""
    md5 = hashlib.md5(usedforsecurity=False)  # a cache key; allowed on FIPS systems
    md5.update(torch.__version__.encode())
    for path in sorted(paths):
        md5.update(os.path.basename(path).encode() + b'\0')
        with open(path, 'rb') as f:
            md5.update(f.read())
    return md5.hexdigest()

def get_build_dir(module_name, sources, headers=None, source_dir=None):
    """Directory where `get_plugin` builds this exact set of sources."""
    digest = source_digest(_source_paths(sources, headers, source_dir))
    return os.path.join(get_build_root(), module_name, f'{digest}-{_mangled_gpu_name()}')

def _populate_build_dir(build_dir, paths):
    """Copy the sources into `build_dir` unless already there; safe when processes race."""
    if os.path.isdir(build_dir):
        return
    names = [os.path.basename(path) for path in paths]
    if len(set(names)) != len(names):
        raise PluginBuildError(f'Plugin sources must have distinct file names, got {names}.')
    parent = os.path.dirname(build_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f'srctmp-{uuid.uuid4().hex}')
    os.makedirs(tmp_dir)
    for path in paths:
        shutil.copyfile(path, os.path.join(tmp_dir, os.path.basename(path)))
    try:
        os.replace(tmp_dir, build_dir)  # atomic; fails if another process got there first
    except OSError:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if not os.path.isdir(build_dir):
            raise

#----------------------------------------------------------------------------
# Build lock.
#
# torch.utils.cpp_extension.load guards a build directory with a bare `lock` file (FileBaton) and
# waits forever while it exists, so a build killed mid-way blocks every later run. Before calling it
# we take our own lock, `lock.owner`, created exclusively and holding our pid and hostname; that
# tells a later process whether the holder is still alive. Holding it also means any torch `lock`
# we then see was left behind, not in use.

def _pid_alive(pid):
    """True/False when we can tell, None when we cannot (Windows: os.kill would terminate the process)."""
    if os.name == 'nt':
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True

def _read_owner(build_dir):
    try:
        with open(os.path.join(build_dir, _OWNER_NAME), encoding='utf-8') as f:
            owner = json.load(f)
        return dict(pid=int(owner['pid']), hostname=str(owner['hostname']))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, or being written right now

def _lock_age(path):
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return None

def _format_age(seconds):
    minutes = int(seconds // 60)
    return f'{minutes // 60} h {minutes % 60} min' if minutes >= 60 else f'{minutes} min {int(seconds % 60)} s'

def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass

def inspect_build_lock(build_dir, max_age=None):
    """Classify the build locks of `build_dir` without waiting.

    Returns one of ('free', None); ('dead', owner) when `lock.owner` names a process on this host
    that no longer exists; ('stale', (path, age)) when the lock at `path` is older than `max_age`
    seconds (default `stale_lock_timeout`); ('held', (path, age)) otherwise.
    """
    max_age = stale_lock_timeout if max_age is None else max_age
    for name in (_OWNER_NAME, _LOCK_NAME):
        path = os.path.join(build_dir, name)
        age = _lock_age(path)
        if age is None:
            continue
        if name == _OWNER_NAME:
            owner = _read_owner(build_dir)
            if owner is not None and owner['hostname'] == socket.gethostname() and owner['pid'] != os.getpid():
                if _pid_alive(owner['pid']) is False:
                    return 'dead', owner
        return ('stale' if age > max_age else 'held'), (path, age)
    return 'free', None

def _stale_error(build_dir, path, age):
    owner = _read_owner(build_dir) if path.endswith(_OWNER_NAME) else None
    holder = f'process {owner["pid"]} on host {owner["hostname"]}' if owner else 'an unknown process'
    return StaleBuildLockError(f'Build lock "{path}" has been held by {holder} for {_format_age(age)}; '
                               f'if no other build is running, delete that file and try again.')

def acquire_build_lock(build_dir, max_age=None):
    """Take `lock.owner` in `build_dir`, waiting while a live process holds it.

    A lock left by a process that died on this host is removed (with a note). A lock older than
    `max_age` seconds raises StaleBuildLockError naming the file to delete. Release with
    `release_build_lock`.
    """
    owner_path = os.path.join(build_dir, _OWNER_NAME)
    torch_lock = os.path.join(build_dir, _LOCK_NAME)
    while True:
        try:
            fd = os.open(owner_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            state, info = inspect_build_lock(build_dir, max_age)
            if state == 'dead':
                if _read_owner(build_dir) == info:  # re-check: another waiter may have replaced it already
                    _remove_quietly(owner_path)
                    _remove_quietly(torch_lock)  # created by that same process inside load()
                    if verbosity != 'none':
                        print(f'Removed stale build lock "{owner_path}" left by process {info["pid"]}, which no longer exists.')
                continue
            if state == 'stale':
                raise _stale_error(build_dir, *info) from None
            if state == 'held':
                time.sleep(lock_poll_interval)
            continue
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(dict(pid=os.getpid(), hostname=socket.gethostname(), time=time.time()), f)
        break

    # Every builder takes lock.owner first, so a torch lock seen now belongs to no running build of ours.
    try:
        while True:
            age = _lock_age(torch_lock)
            if age is None:
                return
            if age > (stale_lock_timeout if max_age is None else max_age):
                raise _stale_error(build_dir, torch_lock, age)
            time.sleep(lock_poll_interval)
    except BaseException:
        release_build_lock(build_dir)
        raise

def release_build_lock(build_dir):
    """Remove `lock.owner` if this process holds it."""
    owner = _read_owner(build_dir)
    if owner is not None and owner['pid'] == os.getpid() and owner['hostname'] == socket.gethostname():
        _remove_quietly(os.path.join(build_dir, _OWNER_NAME))

#----------------------------------------------------------------------------
# Compiler discovery (Windows).

def _find_msvc_bindir():
    patterns = [
        'C:/Program Files*/Microsoft Visual Studio/*/*/VC/Tools/MSVC/*/bin/Hostx64/x64',
        'C:/Program Files*/Microsoft Visual Studio */vc/bin',
    ]
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[-1]
    return None

def _ensure_compiler():
    if os.name != 'nt' or shutil.which('cl') is not None:
        return
    bindir = _find_msvc_bindir()
    if bindir is None:
        raise PluginBuildError('Could not find the MSVC compiler cl.exe; install Visual Studio Build Tools or add cl.exe to PATH.')
    os.environ['PATH'] += os.pathsep + bindir

#----------------------------------------------------------------------------
# Building.

def get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Build (or reuse) the extension `module_name` from `sources` and return the loaded module.

    `headers` are hashed and copied but not compiled; paths are relative to `source_dir` when given.
    `build_kwargs` go to torch.utils.cpp_extension.load. Raises on failure; see `try_get_plugin`.
    """
    assert verbosity in ('none', 'brief', 'full')
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]

    if verbosity == 'full':
        print(f'Setting up PyTorch plugin "{module_name}"...')
    elif verbosity == 'brief':
        print(f'Setting up PyTorch plugin "{module_name}"... ', end='', flush=True)
    try:
        module = _build(module_name, sources, headers, source_dir, build_kwargs)
    except:
        if verbosity == 'brief':
            print('Failed!')
        raise
    if verbosity == 'full':
        print(f'Done setting up PyTorch plugin "{module_name}".')
    elif verbosity == 'brief':
        print('Done.')
    _cached_plugins[module_name] = module
    return module

def _build(module_name, sources, headers, source_dir, build_kwargs):
    _ensure_compiler()
    if not torch.utils.cpp_extension.is_ninja_available():
        raise PluginBuildError('The ninja build tool is not installed; run "pip install ninja".')
    paths = _source_paths(sources, headers, source_dir)
    build_dir = get_build_dir(module_name, sources, headers, source_dir)
    _populate_build_dir(build_dir, paths)

    compiled = [os.path.join(build_dir, os.path.basename(path)) for path in _source_paths(sources, None, source_dir)]
    acquire_build_lock(build_dir)
    saved_arch_list = os.environ.get('TORCH_CUDA_ARCH_LIST')
    os.environ['TORCH_CUDA_ARCH_LIST'] = ''  # build for the visible GPU; container presets often break nvcc
    try:
        return torch.utils.cpp_extension.load(name=module_name, sources=compiled, build_directory=build_dir,
                                              verbose=(verbosity == 'full'), **build_kwargs)
    finally:
        release_build_lock(build_dir)
        if saved_arch_list is None:
            del os.environ['TORCH_CUDA_ARCH_LIST']
        else:
            os.environ['TORCH_CUDA_ARCH_LIST'] = saved_arch_list

#----------------------------------------------------------------------------
# Fallback.

def try_get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Like `get_plugin`, but return None when the plugin cannot be built.

    The first failure for a module name emits one PluginFallbackWarning; later calls return None at
    once without retrying the build.
    """
    if module_name in _failed_plugins:
        return None
    try:
        return get_plugin(module_name, sources, headers=headers, source_dir=source_dir, **build_kwargs)
    except Exception as error:  # any failure means: use the reference path
        reason = _one_line(error)
        _failed_plugins[module_name] = reason
        warnings.warn(f'Plugin "{module_name}" is unavailable ({reason}), so the op uses its slower reference '
                      f'implementation; set torch_utils.custom_ops.verbosity = "full" to see the build log.',
                      PluginFallbackWarning, stacklevel=2)
        return None

def try_get_kernel_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """The ops' CUDA kernels: None while they are disabled (`cuda_kernels_enabled()`), else `try_get_plugin`."""
    if not cuda_kernels_enabled():
        return None
    return try_get_plugin(module_name, sources, headers=headers, source_dir=source_dir, **build_kwargs)

def note_reference_path():
    """Print to stderr, once per process, that CUDA tensors run the ops' reference path (kernels disabled).

    An op's dispatch calls this when a CUDA tensor that its kernel would take falls back because the
    kernel plugin is unavailable. With the kernels enabled that means the build failed, which
    `try_get_plugin` has already reported once per plugin (PluginFallbackWarning), so nothing more is
    printed. Silent when `verbosity == 'none'` and in processes of rank != 0. stderr, so that scripts
    whose stdout is data (bench/ops_cuda.py's JSON lines) stay parseable.
    """
    global _reference_path_noted
    if _reference_path_noted or cuda_kernels_enabled() or verbosity == 'none':
        return
    from torch_utils import distributed  # imported here: it is not needed until a CUDA tensor shows up
    _reference_path_noted = True  # a process's rank does not change, so rank != 0 stays silent
    if distributed.get_rank() == 0:
        print(f'CUDA kernels are disabled (set {CUDA_KERNELS_ENV}=1 to enable them): the CUDA ops '
              f'{", ".join(KERNEL_OPS)} run their reference PyTorch path.', file=sys.stderr, flush=True)

def _one_line(error, limit=300):
    """Short reason for a failure; a build error becomes its headline plus the first compiler error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[0]
    headline = re.match(r"Error building extension '[^']*'", text)
    if headline:
        text = headline.group(0)
        first_error = next((line for line in lines[1:] if re.search(r'\berror\b', line, re.IGNORECASE)
                            and not line.startswith(('FAILED', 'c++', 'g++', 'cl ', 'nvcc', 'ninja'))), None)
        if first_error:
            text += ': ' + re.sub(r'(?:[^\s:]*[/\\])+', '', first_error)  # drop directories
    text = re.sub(r'\s+', ' ', text)
    if len(text) > limit:
        text = text[:limit - 3] + '...'
    return f'{type(error).__name__}: {text}'

#----------------------------------------------------------------------------
