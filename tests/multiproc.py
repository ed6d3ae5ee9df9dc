"""Running several worker processes from a test without ever hanging the suite."""

import os
import signal
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_processes(commands, timeout, envs=None):
    """Run commands concurrently; kill every process group started here if they exceed `timeout` seconds.

    Returns a list of (returncode, stdout, stderr).
    """
    envs = envs or [None] * len(commands)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                              env=env, start_new_session=True) for cmd, env in zip(commands, envs)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.communicate()
        pytest.fail(f'processes did not finish within {timeout} s')
    return results
