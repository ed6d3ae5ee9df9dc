"""dnnlib.cli: the option types and output checks every script shares."""

import os

import click
import pytest
from click.testing import CliRunner

from cli_checks import make_read_only
from dnnlib import cli


def command(option_type, default=None):
    """A click command with one option --x of `option_type`, echoing repr(value)."""
    @click.command()
    @click.option('--x', type=option_type, default=default, show_default=default is not None)
    def main(x):
        click.echo(repr(x))
    return main


def parse(option_type, text):
    """-> (exit code, last output line)."""
    result = CliRunner().invoke(command(option_type), [f'--x={text}'])
    assert 'Traceback' not in result.output
    return result.exit_code, result.output.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------
# FiniteFloat.

@pytest.mark.parametrize('text, value', [('1.5', 1.5), (' -2 ', -2.0), ('0', 0.0), ('1e3', 1000.0)])
def test_finite_float_accepts_numbers(text, value):
    assert parse(cli.FiniteFloat(), text) == (0, repr(value))


@pytest.mark.parametrize('text', ['nan', 'NaN', 'inf', '-inf', 'Infinity', '1e999'])
def test_finite_float_refuses_nan_and_inf_as_a_usage_error(text):
    code, line = parse(cli.FiniteFloat(), text)
    assert code == 2
    assert line == f"Error: Invalid value for '--x': {text!r} is not a finite number."


def test_finite_float_keeps_the_ranges_of_float_range():
    bounded = cli.FiniteFloat(min=0, max=1)
    assert parse(bounded, '0.5') == (0, '0.5')
    assert parse(bounded, '2') == (2, "Error: Invalid value for '--x': 2.0 is not in the range 0<=x<=1.")
    assert parse(bounded, 'nan') == (2, "Error: Invalid value for '--x': 'nan' is not a finite number in the range 0<=x<=1.")
    assert parse(cli.FiniteFloat(min=0, min_open=True), '0')[0] == 2
    assert parse(cli.FiniteFloat(), 'abc') == (2, "Error: Invalid value for '--x': 'abc' is not a valid float.")


def test_finite_float_help_shows_the_range_or_nothing():
    bounded = CliRunner().invoke(command(cli.FiniteFloat(min=0, max=1), default=0.5), ['--help']).output
    assert '0<=x<=1' in bounded
    unbounded = CliRunner().invoke(command(cli.FiniteFloat(), default=1), ['--help']).output
    assert 'None' not in unbounded and '[default: 1]' in unbounded


def test_finite_float_converts_defaults_too():
    result = CliRunner().invoke(command(cli.FiniteFloat(), default=float('nan')), [])
    assert result.exit_code == 2 and 'finite' in result.output


# ----------------------------------------------------------------------------------------------
# FiniteFloatList.

def test_finite_float_list():
    assert parse(cli.FiniteFloatList(), '0,-0.5, 2') == (0, '[0.0, -0.5, 2.0]')
    assert parse(cli.FiniteFloatList(count=2), '0.2,0') == (0, '[0.2, 0.0]')
    for text in ('0,nan', 'inf', '0,,1', 'a,b', ''):
        code, line = parse(cli.FiniteFloatList(), text)
        assert code == 2 and line.startswith("Error: Invalid value for '--x': ") and 'finite numbers' in line, line
    code, line = parse(cli.FiniteFloatList(count=3), '0,1')
    assert code == 2 and '3 comma-separated finite numbers' in line
    result = CliRunner().invoke(command(cli.FiniteFloatList(count=2), default='0,0'), [])
    assert result.output.strip() == '[0.0, 0.0]'


# ----------------------------------------------------------------------------------------------
# Bitrate.

@pytest.mark.parametrize('text', ['12M', '800k', '10K', '1.5M', '.5M', '1200000', '1000', '10G'])
def test_bitrate_accepts_what_ffmpeg_takes(text):
    assert parse(cli.Bitrate(), text) == (0, repr(text))


@pytest.mark.parametrize('text', ['banana', '10Q', '12 M', '-1M', '0', '999', '20G', 'M', '1e6', ''])
def test_bitrate_refuses_other_text_and_rates_encoders_refuse(text):
    code, line = parse(cli.Bitrate(), text)
    assert code == 2
    assert line.startswith("Error: Invalid value for '--x': ") and 'e.g. 12M, 800k or 1200000.' in line


# ----------------------------------------------------------------------------------------------
# check_output_path.

def refused(path, option, kind):
    with pytest.raises(cli.CliError) as info:
        cli.check_output_path(path, option, kind)
    message = info.value.message
    assert '\n' not in message and message.endswith('.') and option in message
    return message


def test_output_paths_that_can_be_made_are_accepted_and_nothing_is_created(tmp_path):
    (tmp_path / 'existing').mkdir()
    (tmp_path / 'old.pkl').write_text('x')
    for path, kind in [(tmp_path / 'a' / 'b' / 'c', 'dir'), (tmp_path / 'existing', 'dir'), (tmp_path / 'a' / 'x.zip', 'file'),
                       (tmp_path / 'old.pkl', 'file')]:
        cli.check_output_path(path, '--out', kind)
    assert sorted(os.listdir(tmp_path)) == ['existing', 'old.pkl']


def test_output_path_whose_parent_is_a_file(tmp_path):
    (tmp_path / 'file').write_text('x')
    for kind in ('dir', 'file'):
        message = refused(tmp_path / 'file' / 'sub' / 'out.zip', '--dest', kind)
        assert message.startswith(f'--dest={tmp_path / "file" / "sub" / "out.zip"} lies under {tmp_path / "file"}, which is a file')


def test_folder_that_is_a_file_and_file_that_is_a_folder(tmp_path):
    (tmp_path / 'file').write_text('x')
    assert 'is a file, not a folder' in refused(tmp_path / 'file', '--outdir', 'dir')
    assert 'is a folder' in refused(tmp_path, '--output', 'file')


def test_read_only_folder(tmp_path, monkeypatch):
    (tmp_path / 'locked').mkdir()
    folder = make_read_only(tmp_path / 'locked', monkeypatch)  # as root, os.access is made to honour the mode bits
    for path, kind in [(folder, 'dir'), (folder / 'new' / 'deeper', 'dir'), (folder / 'x.mp4', 'file')]:
        message = refused(path, '--outdir', kind)
        assert message == f'Cannot write --outdir={path}: the folder {folder} is not writable; pass a --outdir you can write to.'
    assert not os.listdir(folder)


def test_what_and_fix_replace_the_default_words(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(cli.CliError, match=r'^the run directory is a file, not a folder; copy it\.$'):
        cli.check_output_path(tmp_path / 'file', '--network', 'dir', what='the run directory', fix='copy it')


# ----------------------------------------------------------------------------------------------
# check_image_size.

def test_image_size_limits():
    cli.check_image_size(16384, 16384, 3, '--resolution')
    with pytest.raises(cli.CliError, match=r'^--resolution asks for a 32768x32768 image .* 16384 pixels per side'):
        cli.check_image_size(32768, 32768, 3, '--resolution')
    cli.check_image_size(100000, 16, 3, '--grid', max_side=None)  # a wide grid: only the bytes count
    with pytest.raises(cli.CliError, match=r'1024 MiB .*; pass fewer seeds\.$'):
        cli.check_image_size(100000, 100000, 3, '--grid', max_side=None, fix='pass fewer seeds')
    assert cli.MAX_IMAGE_SIDE ** 2 * 3 <= cli.MAX_IMAGE_BYTES, 'one image at the side limit fits the byte limit'
