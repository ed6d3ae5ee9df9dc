"""The scripts say what they run: a refused pickle names the option --trust-code, and train.py says when
--gpus=N becomes N CPU processes because there is no CUDA device."""

import json
import os
import pickle
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, 'tests')]
import calc_metrics  # noqa: E402
import gen_images  # noqa: E402
import gen_video  # noqa: E402
import legacy  # noqa: E402
import train  # noqa: E402
from training import snapshots  # noqa: E402


class UnregisteredNetwork:
    """A class of this test module: the no-exec loader admits no global of it."""


@pytest.fixture(scope='module')
def foreign_pkl(tmp_path_factory):
    path = tmp_path_factory.mktemp('foreign') / 'foreign.pkl'
    net = UnregisteredNetwork()
    with open(path, 'wb') as f:
        pickle.dump(dict(G=net, D=net, G_ema=net, augment_pipe=None, training_set_kwargs=None), f)
    return str(path)


@pytest.fixture(scope='module')
def pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp('pngs')
    rng = np.random.default_rng(0)
    for i in range(4):
        PIL.Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(folder / f'{i}.png')
    return str(folder)


@pytest.fixture(autouse=True)
def _never_launch(monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE'):
        monkeypatch.delenv(name, raising=False)

    def launch(*args, **kwargs):
        raise AssertionError('a script got past its checks and launched work')
    monkeypatch.setattr(train.distributed, 'launch', launch)
    monkeypatch.setattr(calc_metrics.distributed, 'launch', launch)


def assert_refused_naming_the_option(result, pkl):
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert 'Traceback' not in result.output
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith('Error: ') and pkl in message, message
    assert 'UnregisteredNetwork' in message and 'without executing code' in message, message
    assert message.rstrip('.').endswith('if you trust the file and its author, pass --trust-code'), message
    assert 'trust_code=True' not in result.output


@pytest.mark.parametrize('script', ['gen_images', 'gen_video', 'calc_metrics', 'legacy', 'train'])
def test_a_refused_pickle_names_the_trust_code_option(script, foreign_pkl, pngs, tmp_path):
    out = tmp_path / 'out'
    main, args = {
        'gen_images': (gen_images.main, [f'--network={foreign_pkl}', '--seeds=0', f'--outdir={out}', '--device=cpu']),
        'gen_video': (gen_video.main, [f'--network={foreign_pkl}', '--seeds=0', f'--output={out}.mp4', '--device=cpu']),
        'calc_metrics': (calc_metrics.main, [f'--network={foreign_pkl}', f'--data={pngs}', '--device=cpu']),
        'legacy': (legacy.main, [f'--source={foreign_pkl}', f'--dest={out}.pkl']),
        'train': (train.main, [f'--outdir={out}', '--cfg=stylegan2', f'--data={pngs}', '--gpus=1', '--batch=8',
                               '--gamma=1', '--device=cpu', '--metrics=none', f'--resume={foreign_pkl}']),
    }[script]
    assert_refused_naming_the_option(CliRunner().invoke(main, args), foreign_pkl)
    assert os.listdir(tmp_path) == []  # no output file, folder or run directory


def test_python_callers_still_read_trust_code_true(foreign_pkl):
    with pytest.raises(snapshots.NetworkPickleError) as info:
        snapshots.open_network_pkl(foreign_pkl)
    message = str(info.value)
    assert 'trust_code=True' in message and '--trust-code' not in message
    with open(foreign_pkl, 'rb') as f, pytest.raises(legacy.NetworkPickleError, match='trust_code=True'):
        legacy.load_network_pkl(f)


def test_a_refusal_without_the_loaders_advice_gets_the_option_appended():
    from torch_utils import persistence
    error = persistence.UnsafePickleError('A persistent object in the file is malformed.')
    assert snapshots._refusal_text(error, '--trust-code') == \
        'A persistent object in the file is malformed; if you trust the file and its author, pass --trust-code.'
    assert snapshots._refusal_text(error, None) == 'A persistent object in the file is malformed.'


# ----------------------------------------------------------------------------------------------
# train.py --gpus=N without CUDA.

NOTE = 'No CUDA device: --gpus=2 runs 2 CPU processes (pass --device=cpu to silence this note).'


def dry_run(pngs, tmp_path, *extra):
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path / "out"}', '--cfg=stylegan2', f'--data={pngs}',
                                             '--batch=8', '--gamma=1', '--metrics=none', '--dry-run', *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    options = json.loads(result.stdout.split('\nRun directory: ')[0])  # the note keeps stdout machine-readable
    return options, result.stderr


def test_gpus_without_cuda_and_without_device_says_it_runs_cpu_processes(pngs, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    options, stderr = dry_run(pngs, tmp_path, '--gpus=2')
    assert stderr.splitlines() == [NOTE]
    assert options['device'] == 'cpu' and options['num_gpus'] == 2
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('extra', [['--gpus=2', '--device=cpu'], ['--gpus=1']])
def test_no_note_when_the_cpu_is_asked_for_or_one_process_runs(pngs, tmp_path, monkeypatch, extra):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    options, stderr = dry_run(pngs, tmp_path, *extra)
    assert stderr == '' and options['device'] == 'cpu'
