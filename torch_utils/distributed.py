"""Process-group set-up that lets one entry point run in any of three ways.

1. Plain `python train.py ...`, one process: no process group is created.
2. `torchrun [--nnodes=M --node_rank=...] --nproc_per_node=N train.py ...`: each process reads RANK,
   LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from the environment (rendezvous `env://`),
   so multi-node runs work too.
3. `python train.py --gpus=N ...` on one node: the parent picks a free TCP port on 127.0.0.1 and
   spawns N children that rendezvous on it.

Usage:

    def main(opts):
        device = distributed.get_device()
        if distributed.is_main():
            print('only once')
        ...

    distributed.launch(main, num_procs=opts.gpus, args=(opts,))

`launch` calls `main(*args)` in every process after the process group is ready, and tears it down
afterwards. The backend is NCCL for CUDA devices and gloo on CPU. Mistakes a user can make (asking
for more GPUs than exist, inconsistent torchrun variables) raise `DistributedSetupError` with one
sentence saying what is wrong.
"""

import contextlib
import datetime
import os
import signal
import socket
import sys
import threading

import torch

#----------------------------------------------------------------------------

class DistributedSetupError(RuntimeError):
    """The requested process layout cannot work on this machine or contradicts the environment."""

_state = dict(rank=0, world_size=1, local_rank=0, device=None)

#----------------------------------------------------------------------------
# Environment inspection.

def find_free_port(host='127.0.0.1'):
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]

def _env_int(name):
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise DistributedSetupError(f'Environment variable {name}={text!r} is not an integer.') from None

def launched_by_torchrun():
    """True when the process was started by torchrun (or a launcher that sets the same variables)."""
    return 'RANK' in os.environ or 'WORLD_SIZE' in os.environ

def _torchrun_layout():
    """Read and validate the torchrun variables; return (rank, world_size, local_rank, local_world_size)."""
    rank, world_size = _env_int('RANK'), _env_int('WORLD_SIZE')
    if rank is None or world_size is None:
        present, missing = ('RANK', 'WORLD_SIZE') if rank is not None else ('WORLD_SIZE', 'RANK')
        raise DistributedSetupError(f'{present} is set but {missing} is not; set both (torchrun does) or neither.')
    if world_size < 1:
        raise DistributedSetupError(f'WORLD_SIZE={world_size} must be at least 1.')
    if not 0 <= rank < world_size:
        raise DistributedSetupError(f'RANK={rank} must be in [0, WORLD_SIZE={world_size}).')
    local_world_size = _env_int('LOCAL_WORLD_SIZE')
    if local_world_size is not None and not 1 <= local_world_size <= world_size:
        raise DistributedSetupError(f'LOCAL_WORLD_SIZE={local_world_size} must be in [1, WORLD_SIZE={world_size}].')
    local_rank = _env_int('LOCAL_RANK')
    if local_rank is None:
        local_rank = rank if local_world_size is None else rank % local_world_size
    if local_world_size is not None and not 0 <= local_rank < local_world_size:
        raise DistributedSetupError(f'LOCAL_RANK={local_rank} must be in [0, LOCAL_WORLD_SIZE={local_world_size}).')
    return rank, world_size, local_rank, local_world_size

def _default_device_type():
    return 'cuda' if torch.cuda.is_available() else 'cpu'

def _check_device_type(device_type):
    if device_type not in ('cuda', 'cpu'):
        raise DistributedSetupError(f"device_type must be 'cuda' or 'cpu', got {device_type!r}.")
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise DistributedSetupError('CUDA was requested but no CUDA device is available; run on the CPU instead.')

def _check_cuda_count(num_needed, what):
    available = torch.cuda.device_count()
    if num_needed > available:
        raise DistributedSetupError(f'{what} needs {num_needed} CUDA device(s) but only {available} '
                                    f'{"is" if available == 1 else "are"} visible on this node.')

def _default_backend(device_type):
    if device_type == 'cuda' and torch.distributed.is_nccl_available():
        return 'nccl'
    return 'gloo'

#----------------------------------------------------------------------------
# Set-up and tear-down.

def init(rank=None, world_size=None, local_rank=None, backend=None, init_method=None, device_type=None, timeout=None):
    """Set up this process and return its torch.device.

    Arguments left as None come from the torchrun variables when present, else describe a single
    process. `device_type` is 'cuda' or 'cpu' (None: CUDA when available). `backend` defaults to NCCL
    for CUDA and gloo for CPU; `init_method` to `env://` (MASTER_ADDR / MASTER_PORT). `timeout` is in
    seconds. A process group is created only when `world_size > 1`.
    """
    device_type = device_type or _default_device_type()
    _check_device_type(device_type)

    if launched_by_torchrun():
        env_rank, env_world_size, env_local_rank, _ = _torchrun_layout()
        for arg_name, arg, env_name, env_value in [('rank', rank, 'RANK', env_rank),
                                                   ('world_size', world_size, 'WORLD_SIZE', env_world_size)]:
            if arg is not None and arg != env_value:
                raise DistributedSetupError(f'{arg_name}={arg} contradicts the environment {env_name}={env_value}.')
        rank, world_size = env_rank, env_world_size
        local_rank = env_local_rank if local_rank is None else local_rank
    else:
        world_size = 1 if world_size is None else int(world_size)
        if world_size < 1:
            raise DistributedSetupError(f'world_size={world_size} must be at least 1.')
        if rank is None and world_size > 1:
            raise DistributedSetupError(f'rank must be given for world_size={world_size} when not started by torchrun.')
        rank = 0 if rank is None else int(rank)
        if not 0 <= rank < world_size:
            raise DistributedSetupError(f'rank={rank} must be in [0, world_size={world_size}).')
        local_rank = rank if local_rank is None else int(local_rank)

    if device_type == 'cuda':
        _check_cuda_count(local_rank + 1, f'LOCAL_RANK={local_rank}')
        torch.cuda.set_device(local_rank)
        device = torch.device('cuda', local_rank)
    else:
        device = torch.device('cpu')

    if world_size > 1:
        if torch.distributed.is_initialized():
            if torch.distributed.get_world_size() != world_size:
                raise DistributedSetupError(f'A process group of size {torch.distributed.get_world_size()} already '
                                            f'exists; cannot set up one of size {world_size}.')
        else:
            backend = backend or _default_backend(device_type)
            if backend == 'nccl' and device_type != 'cuda':
                raise DistributedSetupError('The NCCL backend needs CUDA devices; use gloo on the CPU.')
            init_method = init_method or 'env://'
            if init_method == 'env://':
                missing = [name for name in ('MASTER_ADDR', 'MASTER_PORT') if name not in os.environ]
                if missing:
                    raise DistributedSetupError(f'Rendezvous env:// needs {" and ".join(missing)} in the environment.')
            kwargs = dict(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
            if timeout is not None:
                kwargs['timeout'] = datetime.timedelta(seconds=timeout)
            torch.distributed.init_process_group(**kwargs)

    _state.update(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
    return device

def cleanup():
    """Destroy the process group (if any) and forget this process's layout."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _state.update(rank=0, world_size=1, local_rank=0, device=None)

#----------------------------------------------------------------------------
# Queries.

def _group_ready():
    return torch.distributed.is_available() and torch.distributed.is_initialized()

def get_rank():
    return torch.distributed.get_rank() if _group_ready() else _state['rank']

def get_world_size():
    return torch.distributed.get_world_size() if _group_ready() else _state['world_size']

def get_local_rank():
    return _state['local_rank']

def get_device():
    """The device chosen by `init`; before `init`, CUDA when available, else CPU."""
    if _state['device'] is not None:
        return _state['device']
    return torch.device(_default_device_type())

def is_main():
    """True on the process that logs, writes files and prints progress (global rank 0)."""
    return get_rank() == 0

def barrier():
    """Wait for every process; a no-op with a single process."""
    if _group_ready() and get_world_size() > 1:
        if torch.distributed.get_backend() == 'nccl':
            torch.distributed.barrier(device_ids=[get_local_rank()])
        else:
            torch.distributed.barrier()

#----------------------------------------------------------------------------
# Launching.

def launch(fn, num_procs=None, args=(), device_type=None, backend=None, timeout=None):
    """Run `fn(*args)` in every process of the requested layout; return its result in this process.

    - Under torchrun: torchrun already started the processes; `num_procs` may be None or must equal
      its processes per node (LOCAL_WORLD_SIZE) or in total (WORLD_SIZE).
    - Otherwise, `num_procs` None or 1: runs `fn` here, without a process group.
    - Otherwise: spawns `num_procs` processes on this node (one per GPU for CUDA) that rendezvous on a
      free port of 127.0.0.1; returns None once all have finished. `fn` must be picklable (a
      module-level function).
    """
    device_type = device_type or _default_device_type()
    _check_device_type(device_type)

    if launched_by_torchrun():
        _, world_size, _, local_world_size = _torchrun_layout()
        accepted = {world_size} | ({local_world_size} if local_world_size is not None else set())
        if num_procs is not None and num_procs not in accepted:
            raise DistributedSetupError(f'{num_procs} processes were requested but torchrun started '
                                        f'{local_world_size or world_size} per node ({world_size} in total); '
                                        f'make them match or leave the process count unset.')
        return _run_here(fn, args, dict(backend=backend, device_type=device_type, timeout=timeout))

    num_procs = 1 if num_procs is None else num_procs
    if not isinstance(num_procs, int) or num_procs < 1:
        raise DistributedSetupError(f'The number of processes must be a positive integer, got {num_procs!r}.')
    if num_procs == 1:
        return _run_here(fn, args, dict(rank=0, world_size=1, local_rank=0, device_type=device_type))

    if device_type == 'cuda':
        _check_cuda_count(num_procs, f'Running {num_procs} processes')
    init_method = f'tcp://127.0.0.1:{find_free_port()}'
    init_kwargs = dict(world_size=num_procs, backend=backend, init_method=init_method, device_type=device_type, timeout=timeout)
    context = torch.multiprocessing.start_processes(_spawned_worker, args=(fn, args, init_kwargs), nprocs=num_procs,
                                                    join=False, start_method='spawn')
    with _forward_stop_signals(context.processes):
        while not context.join():
            pass
    return None

@contextlib.contextmanager
def _forward_stop_signals(processes):
    # `kill <parent>` (or a scheduler signalling only the launcher) must reach the workers, which
    # then stop cleanly; the parent itself keeps waiting for them instead of dying first.
    def forward(signum, _frame):
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signum)
    previous = dict()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, forward)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

def _run_here(fn, args, init_kwargs):
    init(**init_kwargs)
    try:
        result = fn(*args)
        barrier()  # nobody tears down connections that a slower rank still uses
        return result
    finally:
        cleanup()

def _spawned_worker(rank, fn, args, init_kwargs):
    # SIGTERM (which the parent forwards) unwinds through `fn`'s clean-up as Ctrl-C does; and a stopped worker
    # exits 128 + signum, where torch.multiprocessing would report a KeyboardInterrupt as a success.
    from dnnlib import signals
    try:
        with signals.unwind_on_stop_signals():
            _run_here(fn, args, dict(init_kwargs, rank=rank, local_rank=rank))
    except KeyboardInterrupt as error:
        if rank == 0:
            print(signals.message(error), file=sys.stderr, flush=True)
        raise SystemExit(signals.exit_status(error)) from None

#----------------------------------------------------------------------------
