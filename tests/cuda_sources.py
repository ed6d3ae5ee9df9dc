"""Checks of CUDA kernel sources on machines without a GPU: what they include, that nvcc compiles
them, and host builds of their dependency-free arithmetic headers (called through ctypes)."""

import ctypes
import os
import shutil
import subprocess

import pytest
import torch.utils.cpp_extension

OPS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'torch_utils', 'ops')


def includes_of(name):
    """The #include targets of torch_utils/ops/<name>, as written ("local.h" or <system.h>)."""
    with open(os.path.join(OPS_DIR, name)) as f:
        return {line.split(None, 1)[1].strip() for line in f if line.strip().startswith('#include')}


def transitive_includes(name):
    """(local files, other includes) reached from torch_utils/ops/<name> through its local includes."""
    local, other, todo = set(), set(), [name]
    while todo:
        for target in includes_of(todo.pop()):
            if target.startswith('"'):
                header = target.strip('"')
                if header not in local:
                    local.add(header)
                    todo.append(header)
            else:
                other.add(target)
    return local, other


def nvcc_compile(name, out_dir, archs=(80, 90)):
    """Compile torch_utils/ops/<name> with `nvcc -c` for the given SM architectures; returns the
    CompletedProcess. Callers skip when nvcc is absent (`needs_nvcc`)."""
    command = ['nvcc', '-c', os.path.join(OPS_DIR, name), '-std=c++17',
               *[f'-I{path}' for path in torch.utils.cpp_extension.include_paths()],
               *[arg for arch in archs for arg in ('-gencode', f'arch=compute_{arch},code=sm_{arch}')],
               '-o', os.path.join(out_dir, name + '.o')]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


needs_nvcc = pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc (the CUDA toolkit compiler) is not installed')


def host_library(shim_source, out_dir):
    """ctypes.CDLL of `shim_source` (C++ including headers from torch_utils/ops) built with g++."""
    if shutil.which('g++') is None:
        pytest.skip('g++ is not installed')
    source = os.path.join(out_dir, 'shim.cpp')
    with open(source, 'w') as f:
        f.write(shim_source)
    library = os.path.join(out_dir, 'libshim.so')
    subprocess.run(['g++', '-O1', '-shared', '-fPIC', '-std=c++17', f'-I{OPS_DIR}', source, '-o', library],
                   check=True, capture_output=True)
    return ctypes.CDLL(library)
