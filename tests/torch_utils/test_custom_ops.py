"""Tests for torch_utils.custom_ops: build directories, stale locks, fallback; real g++ builds where possible."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import warnings

import pytest
import torch
import torch.utils.cpp_extension

from torch_utils import custom_ops

@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'ext'))
    monkeypatch.setattr(custom_ops, '_cached_plugins', dict())
    monkeypatch.setattr(custom_ops, '_failed_plugins', dict())
    monkeypatch.setattr(custom_ops, 'verbosity', 'brief')
    monkeypatch.setattr(custom_ops, 'lock_poll_interval', 0.05)

@pytest.fixture
def sources(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'op.cpp').write_text('int op() { return 1; }\n')
    (src / 'op_kernel.cu').write_text('// kernel\n')
    (src / 'op.h').write_text('#pragma once\n')
    return src

class FakeLoad:
    """Stands in for torch.utils.cpp_extension.load and records its calls."""
    def __init__(self, error=None):
        self.calls = []
        self.error = error

    def __call__(self, name, sources, build_directory, verbose, **kwargs):
        self.calls.append(dict(name=name, sources=sources, build_directory=build_directory, verbose=verbose,
                               kwargs=kwargs, arch_list=os.environ.get('TORCH_CUDA_ARCH_LIST')))
        if self.error is not None:
            raise self.error
        return f'module:{name}'

def _dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid

def _write_owner(build_dir, pid, hostname=None):
    os.makedirs(build_dir, exist_ok=True)
    with open(os.path.join(build_dir, 'lock.owner'), 'w') as f:
        json.dump(dict(pid=pid, hostname=hostname or socket.gethostname(), time=time.time()), f)

#----------------------------------------------------------------------------
# Build directory naming.

def test_build_dir_layout_and_env_root(tmp_path, sources):
    build_dir = custom_ops.get_build_dir('my_plugin', ['op.cpp', 'op_kernel.cu'], headers=['op.h'], source_dir=str(sources))
    root, name, leaf = build_dir.rsplit(os.sep, 2)
    assert root == str(tmp_path / 'ext') and name == 'my_plugin'
    digest, gpu = leaf.split('-', 1)
    assert re.fullmatch(r'[0-9a-f]{32}', digest)
    if not torch.cuda.is_available():
        assert gpu == 'cpu'
    assert re.fullmatch(r'[a-z0-9_-]+', gpu)

def test_default_root_without_env(monkeypatch, sources):
    monkeypatch.delenv('TORCH_EXTENSIONS_DIR')
    build_dir = custom_ops.get_build_dir('p', ['op.cpp'], source_dir=str(sources))
    assert build_dir.startswith(torch.utils.cpp_extension.get_default_build_root() + os.sep)

def test_build_dir_hash_tracks_source_bytes(sources):
    def build_dir():
        return custom_ops.get_build_dir('p', ['op.cpp', 'op_kernel.cu'], headers=['op.h'], source_dir=str(sources))
    first = build_dir()
    assert build_dir() == first
    # Order of the lists and absolute vs. source_dir-relative paths do not matter.
    assert custom_ops.get_build_dir('p', [str(sources / 'op_kernel.cu'), str(sources / 'op.cpp')],
                                    headers=[str(sources / 'op.h')]) == first
    (sources / 'op.h').write_text('#pragma once \n')  # one byte more, in a header
    second = build_dir()
    assert second != first
    (sources / 'op.h').write_text('#pragma once\n')
    assert build_dir() == first
    os.utime(sources / 'op.cpp', (0, 0))  # timestamps are irrelevant
    assert build_dir() == first

def test_build_dir_hash_tracks_file_names(sources):
    first = custom_ops.get_build_dir('p', ['op.cpp'], source_dir=str(sources))
    shutil.copy(sources / 'op.cpp', sources / 'other.cpp')
    assert custom_ops.get_build_dir('p', ['other.cpp'], source_dir=str(sources)) != first

def test_populate_build_dir_is_atomic_and_idempotent(tmp_path, sources):
    paths = [str(sources / 'op.cpp'), str(sources / 'op.h')]
    build_dir = str(tmp_path / 'ext' / 'p' / 'abc-cpu')
    custom_ops._populate_build_dir(build_dir, paths)
    assert sorted(os.listdir(build_dir)) == ['op.cpp', 'op.h']
    assert (tmp_path / 'ext' / 'p' / 'abc-cpu' / 'op.cpp').read_text() == 'int op() { return 1; }\n'
    # A second process arriving later keeps the winner's copy and leaves no temporary directory.
    (sources / 'op.cpp').write_text('changed\n')
    custom_ops._populate_build_dir(build_dir, paths)
    assert (tmp_path / 'ext' / 'p' / 'abc-cpu' / 'op.cpp').read_text() == 'int op() { return 1; }\n'
    assert os.listdir(tmp_path / 'ext' / 'p') == ['abc-cpu']

def test_populate_build_dir_race_loser_cleans_up(tmp_path, sources, monkeypatch):
    build_dir = str(tmp_path / 'ext' / 'p' / 'abc-cpu')
    real_replace = os.replace
    def replace_after_rival(src, dst):
        os.makedirs(os.path.join(dst, 'rival'))  # another process wins between our check and our rename
        return real_replace(src, dst)
    monkeypatch.setattr(custom_ops.os, 'replace', replace_after_rival)
    custom_ops._populate_build_dir(build_dir, [str(sources / 'op.cpp')])
    assert os.listdir(tmp_path / 'ext' / 'p') == ['abc-cpu']
    assert os.listdir(build_dir) == ['rival']

#----------------------------------------------------------------------------
# get_plugin with a stand-in for the compiler.

def test_get_plugin_builds_once_in_build_dir(monkeypatch, sources, capsys):
    fake = FakeLoad()
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', fake)
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.0;9.0')
    module = custom_ops.get_plugin('p', ['op.cpp', 'op_kernel.cu'], headers=['op.h'], source_dir=str(sources),
                                   extra_cuda_cflags=['--use_fast_math'])
    assert module == 'module:p'
    assert custom_ops.get_plugin('p', ['op.cpp', 'op_kernel.cu'], headers=['op.h'], source_dir=str(sources)) == module
    assert len(fake.calls) == 1
    call = fake.calls[0]
    expected_dir = custom_ops.get_build_dir('p', ['op.cpp', 'op_kernel.cu'], headers=['op.h'], source_dir=str(sources))
    assert call['build_directory'] == expected_dir
    assert call['sources'] == [os.path.join(expected_dir, 'op.cpp'), os.path.join(expected_dir, 'op_kernel.cu')]
    assert call['kwargs'] == dict(extra_cuda_cflags=['--use_fast_math'])
    assert call['arch_list'] == '' and os.environ['TORCH_CUDA_ARCH_LIST'] == '8.0;9.0'
    assert sorted(os.listdir(expected_dir)) == ['op.cpp', 'op.h', 'op_kernel.cu']  # lock files are gone
    assert capsys.readouterr().out == 'Setting up PyTorch plugin "p"... Done.\n'

def test_get_plugin_verbosity(monkeypatch, sources, capsys):
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', FakeLoad())
    monkeypatch.delenv('TORCH_CUDA_ARCH_LIST', raising=False)
    monkeypatch.setattr(custom_ops, 'verbosity', 'none')
    custom_ops.get_plugin('quiet', ['op.cpp'], source_dir=str(sources))
    assert capsys.readouterr().out == ''
    assert 'TORCH_CUDA_ARCH_LIST' not in os.environ
    monkeypatch.setattr(custom_ops, 'verbosity', 'full')
    custom_ops.get_plugin('loud', ['op.cpp'], source_dir=str(sources))
    out = capsys.readouterr().out
    assert 'Setting up PyTorch plugin "loud"...' in out and 'Done' in out

def test_get_plugin_failure_prints_failed_and_raises(monkeypatch, sources, capsys):
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', FakeLoad(RuntimeError('Error building extension')))
    with pytest.raises(RuntimeError, match='Error building extension'):
        custom_ops.get_plugin('p', ['op.cpp'], source_dir=str(sources))
    assert capsys.readouterr().out == 'Setting up PyTorch plugin "p"... Failed!\n'
    build_dir = custom_ops.get_build_dir('p', ['op.cpp'], source_dir=str(sources))
    assert not os.path.exists(os.path.join(build_dir, 'lock.owner'))

#----------------------------------------------------------------------------
# Fallback.

def test_try_get_plugin_warns_once_and_returns_none(monkeypatch, sources):
    fake = FakeLoad(RuntimeError('Error building extension \'p\':\n[1/2] c++ ... \nfatal error: x.h: No such file'))
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        results = [custom_ops.try_get_plugin('p', ['op.cpp'], source_dir=str(sources)) for _ in range(3)]
    assert results == [None, None, None]
    assert len(fake.calls) == 1  # no rebuild attempts after the first failure
    assert len(caught) == 1 and caught[0].category is custom_ops.PluginFallbackWarning
    message = str(caught[0].message)
    assert 'reference' in message and '\n' not in message
    assert "Error building extension 'p': fatal error: x.h: No such file" in message  # headline + first error
    assert caught[0].filename == __file__  # points at the caller

def test_try_get_plugin_success_returns_module(monkeypatch, sources):
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', FakeLoad())
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert custom_ops.try_get_plugin('p', ['op.cpp'], source_dir=str(sources)) == 'module:p'

def test_try_get_plugin_missing_source(sources):
    with pytest.warns(custom_ops.PluginFallbackWarning, match='FileNotFoundError'):
        assert custom_ops.try_get_plugin('p', ['missing.cpp'], source_dir=str(sources)) is None

#----------------------------------------------------------------------------
# Stale locks: reported or removed, never waited on forever.

def test_lock_of_dead_process_is_removed(monkeypatch, sources, capsys):
    fake = FakeLoad()
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', fake)
    build_dir = custom_ops.get_build_dir('p', ['op.cpp'], source_dir=str(sources))
    custom_ops._populate_build_dir(build_dir, [str(sources / 'op.cpp')])
    open(os.path.join(build_dir, 'lock'), 'w').close()
    dead = _dead_pid()
    _write_owner(build_dir, dead)
    assert custom_ops.inspect_build_lock(build_dir)[0] == 'dead'

    start = time.time()
    assert custom_ops.get_plugin('p', ['op.cpp'], source_dir=str(sources)) == 'module:p'
    assert time.time() - start < 5
    out = capsys.readouterr().out
    assert f'Removed stale build lock "{os.path.join(build_dir, "lock.owner")}"' in out and str(dead) in out
    assert len(fake.calls) == 1
    assert not os.path.exists(os.path.join(build_dir, 'lock'))
    assert not os.path.exists(os.path.join(build_dir, 'lock.owner'))

def test_old_lock_without_owner_is_reported(monkeypatch, sources):
    fake = FakeLoad()
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', fake)
    build_dir = custom_ops.get_build_dir('p', ['op.cpp'], source_dir=str(sources))
    custom_ops._populate_build_dir(build_dir, [str(sources / 'op.cpp')])
    lock = os.path.join(build_dir, 'lock')
    open(lock, 'w').close()
    hour_ago = time.time() - 3600
    os.utime(lock, (hour_ago, hour_ago))
    assert custom_ops.inspect_build_lock(build_dir)[0] == 'stale'

    start = time.time()
    with pytest.raises(custom_ops.StaleBuildLockError) as info:
        custom_ops.get_plugin('p', ['op.cpp'], source_dir=str(sources))
    assert time.time() - start < 5
    message = str(info.value)
    assert f'"{lock}"' in message and 'delete that file' in message and '1 h 0 min' in message
    assert fake.calls == []
    assert os.path.exists(lock)  # not provably stale: left for the user
    assert not os.path.exists(os.path.join(build_dir, 'lock.owner'))  # our own lock was released

    with pytest.warns(custom_ops.PluginFallbackWarning, match=re.escape(lock)):
        assert custom_ops.try_get_plugin('p', ['op.cpp'], source_dir=str(sources)) is None

def test_lock_of_other_host_is_reported_after_timeout(monkeypatch, tmp_path):
    build_dir = str(tmp_path / 'b')
    _write_owner(build_dir, os.getpid() + 1, hostname='elsewhere.example')
    monkeypatch.setattr(custom_ops, 'stale_lock_timeout', 0.3)
    assert custom_ops.inspect_build_lock(build_dir)[0] == 'held'
    start = time.time()
    with pytest.raises(custom_ops.StaleBuildLockError, match='held by process .* on host elsewhere.example'):
        custom_ops.acquire_build_lock(build_dir)
    assert 0.2 < time.time() - start < 5

def test_live_lock_is_waited_for(tmp_path):
    build_dir = str(tmp_path / 'b')
    _write_owner(build_dir, os.getppid())  # a live process on this host
    assert custom_ops.inspect_build_lock(build_dir)[0] == 'held'
    releaser = threading.Timer(0.3, os.remove, [os.path.join(build_dir, 'lock.owner')])
    releaser.start()
    start = time.time()
    custom_ops.acquire_build_lock(build_dir)
    assert time.time() - start >= 0.25
    with open(os.path.join(build_dir, 'lock.owner')) as f:
        assert json.load(f)['pid'] == os.getpid()
    custom_ops.release_build_lock(build_dir)
    assert custom_ops.inspect_build_lock(build_dir) == ('free', None)

#----------------------------------------------------------------------------
# Real builds with ninja + the system C++ compiler (no CUDA, no torch headers: a few seconds).

_have_toolchain = (torch.utils.cpp_extension.is_ninja_available() and shutil.which('c++') is not None
                   and os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))

_TINY_SOURCE = '''
#include <Python.h>
static PyObject* add(PyObject*, PyObject* args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return nullptr;
    return PyLong_FromLong(a + b);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, "a + b"}, {nullptr, nullptr, 0, nullptr}};
static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "raycond_test_tiny_plugin", nullptr, -1, methods};
extern "C" PyObject* PyInit_raycond_test_tiny_plugin() { return PyModule_Create(&module_def); }
'''

@pytest.mark.slow
@pytest.mark.skipif(not _have_toolchain, reason='needs ninja, a C++ compiler and Python headers')
def test_real_build(tmp_path, capsys):
    (tmp_path / 'tiny.cpp').write_text(_TINY_SOURCE)
    module = custom_ops.get_plugin('raycond_test_tiny_plugin', ['tiny.cpp'], source_dir=str(tmp_path))
    assert module.add(40, 2) == 42
    assert custom_ops.get_plugin('raycond_test_tiny_plugin', ['tiny.cpp'], source_dir=str(tmp_path)) is module
    assert capsys.readouterr().out == 'Setting up PyTorch plugin "raycond_test_tiny_plugin"... Done.\n'
    build_dir = custom_ops.get_build_dir('raycond_test_tiny_plugin', ['tiny.cpp'], source_dir=str(tmp_path))
    assert os.path.dirname(module.__file__) == build_dir
    assert not {'lock', 'lock.owner'} & set(os.listdir(build_dir))

@pytest.mark.slow
@pytest.mark.skipif(not _have_toolchain, reason='needs ninja, a C++ compiler and Python headers')
def test_real_build_failure_falls_back(tmp_path):
    (tmp_path / 'broken.cpp').write_text('int broken( { return 0; }\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2):
            assert custom_ops.try_get_plugin('raycond_test_broken_plugin', ['broken.cpp'], source_dir=str(tmp_path)) is None
    assert len(caught) == 1
    message = str(caught[0].message)
    assert 'reference implementation' in message and 'broken.cpp:1:' in message and 'error:' in message

#----------------------------------------------------------------------------
