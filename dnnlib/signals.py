"""Stop signals for the command-line tools: SIGTERM unwinds like Ctrl-C, and either ends a tool with one line.

Every tool writes its outputs under a hidden temporary name and renames them into place; the code
that removes the temporary file on failure runs in `except BaseException` / `finally` blocks, which
Ctrl-C (KeyboardInterrupt) reaches but SIGTERM, whose default action kills the process at once, does
not. While `unwind_on_stop_signals()` is active, SIGTERM and SIGINT both raise `Interrupted` (a
KeyboardInterrupt) in the main thread, so one clean-up path serves failures, Ctrl-C and SIGTERM alike.
Only the first signal raises: later ones are ignored, so that the clean-up itself is not cut short
(SIGKILL still ends the process). A signal that lands where Python would drop the exception (a weakref
callback such as importlib's module-lock callback, a `__del__`) is delivered again 50 ms later.

`exit_on_interrupt` wraps a click command's callback: inside it the signals unwind as above, and an
interruption ends the command with one line on stderr ('Interrupted.' for Ctrl-C) and the exit status
128 + signal number (130 for SIGINT, 143 for SIGTERM), as shells report a process killed by it.

    @click.command()
    @click.option(...)
    @signals.exit_on_interrupt
    def main(...):
        ...
"""

import contextlib
import functools
import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; `signum` says which. A KeyboardInterrupt, so it unwinds as Ctrl-C does."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def signal_number(error):
    """The signal behind a KeyboardInterrupt: its `signum`, else SIGINT (Python's own Ctrl-C)."""
    return int(getattr(error, 'signum', signal.SIGINT))


def exit_status(error):
    """128 + the signal number, what a shell reports for a process stopped by that signal."""
    return 128 + signal_number(error)


def message(error):
    """The one line a tool prints when `error` (a KeyboardInterrupt) stopped it."""
    signum = signal_number(error)
    return 'Interrupted.' if signum == signal.SIGINT else f'Interrupted by {signal.Signals(signum).name}.'


_REDELIVERY_DELAY = 0.05  # seconds


def _swallows_exceptions(frame):
    """Whether an exception raised in `frame` would be dropped rather than unwind the program.

    Python ignores (prints and drops) exceptions from weakref callbacks and `__del__`; a signal that
    arrives while one runs, e.g. the module-lock callback of importlib, must not raise there.
    """
    while frame is not None:
        code = frame.f_code
        if code.co_name == '__del__' or code.co_filename.startswith('<frozen importlib'):
            return True
        frame = frame.f_back
    return False


def _is_ours(handler):
    return getattr(handler, '_unwinds_stop_signals', False)


@contextlib.contextmanager
def unwind_on_stop_signals():
    """While active (in the main thread), SIGTERM and SIGINT raise `Interrupted` once; later ones are ignored.

    A signal the process was started to ignore (e.g. SIGINT of a background job) stays ignored, and a
    handler installed by someone else is left alone; nested uses do nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handle(signum, frame):
        if fired:
            return
        if _swallows_exceptions(frame):
            # Raised here, the exception would be printed and dropped ("Exception ignored in ..."), and the
            # tool would go on as if no signal had come: deliver the signal again a moment later instead.
            threading.Timer(_REDELIVERY_DELAY, os.kill, (os.getpid(), signum)).start()
            return
        fired.append(signum)
        raise Interrupted(signum)
    handle._unwinds_stop_signals = True

    previous = dict()
    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        if _is_ours(current):
            continue
        if current in (signal.SIG_DFL, signal.default_int_handler):  # not ignored, nor someone else's handler
            previous[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_on_interrupt(fn):
    """Decorate a click callback: stop signals unwind through its clean-up, then exit 128 + signum with one line."""
    @functools.wraps(fn)
    def command(*args, **kwargs):
        try:
            with unwind_on_stop_signals():
                return fn(*args, **kwargs)
        except KeyboardInterrupt as error:
            if getattr(sys.stderr, 'isatty', lambda: False)():
                print(file=sys.stderr)  # after the terminal's ^C
            print(message(error), file=sys.stderr)
            sys.exit(exit_status(error))
    return command
