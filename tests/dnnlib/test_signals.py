"""dnnlib/signals.py: SIGTERM unwinds like Ctrl-C, a second signal cannot cut the clean-up short, and a
signal the process was started to ignore stays ignored. Each case runs in a fresh interpreter (no torch),
so a broken handler can never kill the test runner."""

import os
import signal
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code, **kwargs):
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=30, **kwargs)


def test_sigterm_unwinds_through_finally_and_a_second_signal_is_ignored():
    proc = run_python('''
        import os, signal
        from dnnlib import signals
        before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)  # SIG_IGN under a background job
        try:
            with signals.unwind_on_stop_signals():
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    print('not reached')
                finally:
                    os.kill(os.getpid(), signal.SIGINT)  # during the clean-up: ignored
                    print('cleaned up')
        except KeyboardInterrupt as error:
            print(type(error).__name__, error.signum, signals.exit_status(error), signals.message(error))
        print(signal.getsignal(signal.SIGTERM) == before[0], signal.getsignal(signal.SIGINT) == before[1])
    ''')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['cleaned up', 'Interrupted 15 143 Interrupted by SIGTERM.', 'True True']


def test_a_signal_inside_a_destructor_still_unwinds():
    # Python drops exceptions raised in __del__ (and in weakref callbacks, e.g. importlib's module-lock
    # callback): the signal is delivered again after it, instead of being lost there.
    proc = run_python('''
        import os, signal, time
        from dnnlib import signals

        class Resource:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)

        try:
            with signals.unwind_on_stop_signals():
                Resource()
                time.sleep(5)
                print('not reached')
        except KeyboardInterrupt as error:
            print(signals.message(error))
    ''')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == 'Interrupted by SIGTERM.\n' and 'Exception ignored' not in proc.stderr, (proc.stdout, proc.stderr)


def test_an_ignored_signal_stays_ignored():
    proc = run_python('''
        import os, signal
        from dnnlib import signals
        with signals.unwind_on_stop_signals():
            os.kill(os.getpid(), signal.SIGTERM)
        print('still running')
    ''', preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    assert proc.returncode == 0 and proc.stdout == 'still running\n', proc.stderr


def test_exit_on_interrupt_prints_one_line_and_exits_128_plus_signum():
    proc = run_python('''
        import os, signal
        import click
        from dnnlib import signals

        @click.command()
        @signals.exit_on_interrupt
        def main():
            os.kill(os.getpid(), signal.SIGINT)

        main()
    ''', preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == 'Interrupted.\n' and proc.stdout == ''
