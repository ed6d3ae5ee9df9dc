"""Checks shared by the tests of the command-line scripts (run in-process through click's CliRunner)."""

import os


def assert_cli_error(result, *words):
    """The command failed with one 'Error: ...' line naming every word, and no traceback; returns the line."""
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert 'Traceback' not in result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith('Error: '), result.output
    for word in words:
        assert word in message, (word, message)
    return message


def make_read_only(folder, monkeypatch):
    """chmod 0o555 `folder`, so that this process may not write into it; returns `folder`.

    Root ignores permission bits, and os.access then reports every folder writable. The tests run as
    root in the containers, so there os.access is replaced (for the calling test only, in this process)
    by one that honours the owner's write bit of folders: the check under test still meets a
    read-only folder, as a normal user would. Run as a normal user, the real os.access decides.
    """
    os.chmod(folder, 0o555)
    if os.geteuid() == 0:
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            if mode & os.W_OK and os.path.isdir(path) and not os.stat(path).st_mode & 0o200:
                return False
            return real_access(path, mode, *args, **kwargs)
        monkeypatch.setattr(os, 'access', access)
    return folder


def signal_when_ready(command, ready, signum, timeout=120, **popen_kwargs):
    """Run `command` in its own session, send `signum` once `ready()` is true, return (returncode, stdout, stderr).

    SIGINT is left at its default in the child, as in a terminal (a background job would ignore it). The
    child is killed if it is still there at the end, so a test never leaves it behind.
    """
    import signal
    import subprocess
    import time
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen_kwargs)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out, err
