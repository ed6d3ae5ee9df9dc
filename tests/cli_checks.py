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
