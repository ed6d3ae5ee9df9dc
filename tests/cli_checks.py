"""Checks shared by the tests of the command-line scripts (run in-process through click's CliRunner)."""


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
