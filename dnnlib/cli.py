"""Option types and checks shared by the command-line scripts (train.py, gen_images.py, gen_video.py, ...).

Built on click only (nothing here imports torch). Each refuses a mistake before any work starts, with
one sentence naming the option and what to pass instead:

- the option types (`FiniteFloat`, `FiniteFloatList`, `Bitrate`) through click's usage error (exit
  code 2), as click's own types do;
- the checks (`check_output_path`, `check_image_size`) through `CliError` (exit code 1).
"""

import math
import os
import re

import click

from . import util

MAX_IMAGE_SIDE = 16384        # pixels per side of one image (a 16384x16384 RGB image is 805 MB of uint8)
MAX_IMAGE_BYTES = 2 ** 30     # 8-bit pixels of one written picture, e.g. a grid of images (1 GiB)

#----------------------------------------------------------------------------


class CliError(click.ClickException):
    """One sentence on stderr ('Error: ...'), exit code 1, no traceback."""


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan, inf and -inf (click's float and FloatRange let them through).

    FiniteFloat() takes any finite number; the arguments are those of click.FloatRange
    (min, max, min_open, max_open), and --help shows the range as it does for FloatRange.
    """
    name = 'float'

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            within = f' in the range {self._describe_range()}' if self._describe_range() else ''
            self.fail(f'{value!r} is not a finite number{within}.', param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self):
        if self.min is None and self.max is None:
            return ''  # nothing to show in --help (click's FloatRange would say 'x<=None')
        return super()._describe_range()


class FiniteFloatList(click.ParamType):
    """Comma-separated finite floats: '0.1,-0.2' -> [0.1, -0.2]; exactly `count` of them when given."""
    name = 'floats'

    def __init__(self, count=None):
        self.count = count

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            value = ','.join(str(v) for v in value)
        try:
            return util.parse_float_list(value, count=self.count)
        except ValueError as error:
            self.fail(str(error), param, ctx)


class ViewSize(click.ParamType):
    """An output size WIDTHxHEIGHT in pixels, as image tools write it: '320x180' -> (180, 320), the (H, W) order of size=."""
    name = 'size'
    _PATTERN = re.compile(r'(\d+)x(\d+)')

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = self._PATTERN.fullmatch(str(value).strip().lower())
        if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
            option = param.opts[0] if param is not None else '--size'
            self.fail(f'{str(value)!r} is not WIDTHxHEIGHT in pixels (positive integers), e.g. {option}=320x180.', param, ctx)
        return int(match.group(2)), int(match.group(1))


class Bitrate(click.ParamType):
    """A video bitrate as ffmpeg reads it: bits per second, with an optional k, M or G suffix ('12M', '800k', '1200000')."""
    name = 'bitrate'
    _PATTERN = re.compile(r'(\d+(?:\.\d*)?|\.\d+)([kKMG]?)')
    _FACTORS = {'': 1, 'k': 1e3, 'K': 1e3, 'M': 1e6, 'G': 1e9}
    LIMITS = (1e3, 1e10)  # libx264 counts in kbit/s (below 1k it has no bitrate) and 10G is far above any video

    def convert(self, value, param, ctx):
        text = str(value).strip()
        match = self._PATTERN.fullmatch(text)
        bits = float(match.group(1)) * self._FACTORS[match.group(2)] if match else 0
        if not self.LIMITS[0] <= bits <= self.LIMITS[1]:
            self.fail(f'{value!r} is not a bitrate: pass bits per second from 1k to 10G, with an optional k, M or G '
                      f'suffix, e.g. 12M, 800k or 1200000.', param, ctx)
        return text

#----------------------------------------------------------------------------


def check_output_path(path, option, kind, fix=None, what=None):
    """Refuse, before any work, an output `path` that the script could not create or write.

    kind 'dir': a folder that is created if missing and written into (it may exist);
    kind 'file': a file (or an entry such as a dataset folder) created in its parent folder, which
    may replace an existing file but never a folder.
    The nearest existing ancestor of what will be created must be a folder this process can write
    to (os.access W_OK | X_OK). Raises CliError naming `option` (as `what`, when given, instead of
    '--option=path'); `fix` replaces the default advice.
    """
    assert kind in ('dir', 'file'), kind
    shown = what or f'{option}={path}'
    target = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.isdir(target):
        if kind == 'file':
            raise CliError(f'{shown} is a folder; {fix or "pass the name of a file to write"}.')
        folder = target
    elif os.path.lexists(target):
        if kind == 'dir':
            raise CliError(f'{shown} is a file, not a folder; {fix or "pass a folder"}.')
        folder = os.path.dirname(target)
    else:
        folder = os.path.dirname(target)
        while not os.path.lexists(folder):
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder):
            raise CliError(f'{shown} lies under {folder}, which is a file, not a folder; '
                           f'{fix or f"pass a path outside it as {option}"}.')
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f'Cannot write {shown}: the folder {folder} is not writable; '
                       f'{fix or f"pass a {option} you can write to"}.')


def check_image_size(width, height, channels, what, max_side=MAX_IMAGE_SIDE, fix=None):
    """Refuse images that would exhaust memory: a side over `max_side` pixels (None: no side limit),
    or more than MAX_IMAGE_BYTES of 8-bit pixels. Raises CliError naming `what`, the option that sets
    the size; `fix` replaces the default advice."""
    if (max_side is not None and max(width, height) > max_side) or width * height * channels > MAX_IMAGE_BYTES:
        side = f'{max_side} pixels per side and ' if max_side is not None else ''
        raise CliError(f'{what} asks for a {width}x{height} image with {channels} channel(s), beyond the limit of {side}'
                       f'{MAX_IMAGE_BYTES // 2 ** 20} MiB of 8-bit pixels; {fix or f"pass a smaller {what}"}.')
