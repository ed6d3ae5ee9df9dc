"""train.py: option validation and bad input, --dry-run, run-directory naming, and one tiny real run.

Every user mistake must end the same way: exit code 1, exactly one `Error: ...` line on stderr that
names the offending option or file, no traceback, and no run directory under --outdir.
"""

import json
import os
import pickle
import re
import signal
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import dataset_tool  # noqa: E402
import train  # noqa: E402
import dnnlib  # noqa: E402
import tiny_networks  # noqa: E402
from cli_checks import make_read_only, signal_when_ready  # noqa: E402
from training.dataset import DatasetError  # noqa: E402

TORCHRUN_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')

# A network small enough to build and train a step on two CPU cores in about a second.
TINY = ['--cbase=256', '--cmax=16', '--mbstd-group=2', '--workers=0', '--grid=2x2']

# ----------------------------------------------------------------------------------------------
# Datasets.


def write_png_folder(folder, resolution, count=4, labels=True):
    """`count` random RGB images of `resolution` (int or (width, height)); class labels 0/1 when `labels`."""
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    entries = []
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(os.path.join(folder, f'{i}.png'))
        entries.append([f'{i}.png', i % 2])
    if labels:
        with open(os.path.join(folder, 'dataset.json'), 'w') as f:
            json.dump({'labels': entries}, f)
    return str(folder)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Paths of small datasets shared by the whole module."""
    root = tmp_path_factory.mktemp('data')
    cameras_zip = str(root / 'shapes16.zip')
    result = CliRunner().invoke(dataset_tool.main, ['--source=synthetic:shapes', f'--dest={cameras_zip}',
                                                    '--resolution=16x16', '--max-images=16'])
    assert result.exit_code == 0, result.output
    text_file = root / 'notes.txt'
    text_file.write_text('not a dataset\n')
    fake_zip = root / 'fake.zip'
    fake_zip.write_text('not a zip\n')
    os.makedirs(root / 'empty')
    corrupt = write_png_folder(root / 'corrupt', 16)
    with open(os.path.join(corrupt, '3.png'), 'r+b') as f:  # image 3 is read only by the training loop
        f.truncate(40)
    return dict(
        cameras=cameras_zip,
        classes=write_png_folder(root / 'classes16', 16),
        unlabelled=write_png_folder(root / 'unlabelled16', 16, labels=False),
        res12=write_png_folder(root / 'res12', 12),
        res24=write_png_folder(root / 'res24', 24),
        nonsquare=write_png_folder(root / 'nonsquare', (16, 8)),
        corrupt=corrupt,
        text=str(text_file),
        fake_zip=str(fake_zip),
        empty=str(root / 'empty'),
        missing=str(root / 'does-not-exist'),
    )


# ----------------------------------------------------------------------------------------------
# Running train.py.


class _LaunchedTraining(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _in_process_calls_never_train(monkeypatch):
    """Not under torchrun; and an in-process call that gets past validation fails fast instead of training."""
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def launch(*args, **kwargs):
        raise _LaunchedTraining('train.py would have started training: the options passed validation')
    monkeypatch.setattr(train.distributed, 'launch', launch)


def base_args(data_path, *extra):
    return ['--cfg=stylegan2', f'--data={data_path}', '--gpus=1', '--batch=8', '--gamma=1', '--device=cpu',
            '--metrics=none', *extra]


def invoke(outdir, *args):
    return CliRunner().invoke(train.main, [f'--outdir={outdir}', *[str(a) for a in args]])


def assert_error(result, outdir, *words, before=None):
    """Exit 1 via sys.exit, one `Error:` line on stderr naming `words`, nothing on stdout, no run directory."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert 'Traceback' not in result.output
    assert result.stdout == '', result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert_no_run_dir(outdir, before)
    return lines[0]


def assert_no_run_dir(outdir, before=None):
    if before is None:
        assert not os.path.exists(outdir), os.listdir(outdir)
    else:
        assert sorted(os.listdir(outdir)) == sorted(before)


def dry_run(outdir, *args):
    """-> (options dict, announced run directory); checks that nothing was written."""
    before = sorted(os.listdir(outdir)) if os.path.isdir(outdir) else None
    result = invoke(outdir, *args, '--dry-run')
    assert result.exit_code == 0, (result.output, result.exception)
    text, run_line = result.stdout.split('\nRun directory: ')
    assert run_line.splitlines()[0].endswith(' (dry run: nothing created)'), run_line
    assert_no_run_dir(outdir, before)
    return json.loads(text), run_line.split(' (dry run')[0]


def run_script(outdir, *args, timeout=120):
    env = {key: value for key, value in os.environ.items() if key not in TORCHRUN_VARIABLES}
    env.setdefault('OMP_NUM_THREADS', '1')  # tiny networks; two spinning threads on a busy 2-core box are ~50x slower
    return subprocess.run([sys.executable, 'train.py', f'--outdir={outdir}', *[str(a) for a in args]], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def assert_script_error(proc, *words):
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert 'Traceback' not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------
# Required options and --cfg.


@pytest.mark.parametrize('dropped', ['cfg', 'data', 'gpus', 'batch', 'gamma'])
def test_missing_required_option(tmp_path, data, dropped):
    args = [a for a in base_args(data['cameras']) if not a.startswith(f'--{dropped}=')]
    assert_error(invoke(tmp_path / 'out', *args), tmp_path / 'out', f'--{dropped}', '--resume')


def test_missing_all_required_options_are_listed_together(tmp_path):
    message = assert_error(invoke(tmp_path / 'out'), tmp_path / 'out')
    for name in ('--cfg', '--data', '--gpus', '--batch', '--gamma'):
        assert name in message


def test_unknown_cfg_is_a_click_usage_error(tmp_path, data):
    args = [a for a in base_args(data['cameras']) if not a.startswith('--cfg=')]
    result = invoke(tmp_path / 'out', '--cfg=stylegan9', *args)
    assert result.exit_code == 2
    assert "'--cfg'" in result.output and 'stylegan2' in result.output
    assert 'Traceback' not in result.output
    assert_no_run_dir(tmp_path / 'out')


# ----------------------------------------------------------------------------------------------
# Batch layout.


@pytest.mark.parametrize('args, words', [
    (['--batch=6', '--gpus=4'], ['--batch=6', '--gpus=4']),
    (['--batch=8', '--gpus=2', '--batch-gpu=3'], ['--batch=8', '--batch-gpu', '2 x 3']),
    (['--batch=8', '--batch-gpu=16'], ['--batch=8', '--batch-gpu', '1 x 16']),
    (['--batch=8', '--batch-gpu=2'], ['--batch-gpu=2', '--mbstd-group=4']),         # smaller than the group
    (['--batch=12', '--batch-gpu=6'], ['--batch-gpu=6', '--mbstd-group=4']),        # not a multiple of it
    (['--batch=8', '--gpus=4'], ['--batch-gpu=2', '--mbstd-group=4']),              # implied batch-gpu 8/4
])
def test_inconsistent_batch_layout(tmp_path, data, args, words):
    base = [a for a in base_args(data['cameras']) if not a.startswith(('--batch=', '--gpus='))]
    if not any(a.startswith('--gpus=') for a in args):
        args = args + ['--gpus=1']
    assert_error(invoke(tmp_path / 'out', *base, *args), tmp_path / 'out', *words)


def test_cpu_processes_are_allowed(tmp_path, data):
    options, run_dir = dry_run(tmp_path / 'out', *[a for a in base_args(data['cameras']) if not a.startswith(('--batch=', '--gpus='))],
                               '--gpus=4', '--batch=16')
    assert options['num_gpus'] == 4 and options['batch_size'] == 16 and options['batch_gpu'] == 4
    assert options['device'] == 'cpu'
    assert os.path.basename(run_dir) == '00000-stylegan2-shapes16-gpus4-batch16-gamma1'


# ----------------------------------------------------------------------------------------------
# The dataset.


@pytest.mark.parametrize('key, words', [
    ('missing', ['does-not-exist', 'does not exist']),
    ('text', ['notes.txt', 'dataset_tool.py']),
    ('fake_zip', ['fake.zip', 'dataset_tool.py']),
    ('empty', ['empty', 'No image files']),
    ('res12', ['res12', '12x12', 'power of two']),
    ('res24', ['res24', '24x24', 'power of two']),
    ('nonsquare', ['nonsquare', '16x8', 'non-square']),
])
def test_unusable_dataset(tmp_path, data, key, words):
    assert_error(invoke(tmp_path / 'out', *base_args(data[key])), tmp_path / 'out', *words)


def test_cond_needs_labels(tmp_path, data):
    assert_error(invoke(tmp_path / 'out', *base_args(data['unlabelled'], '--cond=1')), tmp_path / 'out',
                 'unlabelled16', '--cond')


def test_class_labels_are_accepted(tmp_path, data):
    options, _ = dry_run(tmp_path / 'out', *base_args(data['classes'], '--cond=1', '--mirror=1'))
    assert options['training_set_kwargs']['use_labels'] is True
    assert options['training_set_kwargs']['resolution'] == 16
    assert options['training_set_kwargs']['max_size'] == 4


def test_mirror_of_camera_labelled_data_needs_mirror_cameras(tmp_path, data):
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'], '--cond=1', '--mirror=1')), tmp_path / 'out',
                 'shapes16.zip', '--mirror-cameras')


@pytest.mark.parametrize('extra', [['--cond=1', '--mirror=1', '--mirror-cameras=1'], ['--mirror=1']])
def test_mirror_of_camera_labelled_data_that_is_allowed(tmp_path, data, extra):
    options, _ = dry_run(tmp_path / 'out', *base_args(data['cameras'], *extra))
    assert options['training_set_kwargs']['xflip'] is True


def test_mirror_cameras_needs_mirror(tmp_path, data):
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'], '--cond=1', '--mirror-cameras=1')),
                 tmp_path / 'out', '--mirror-cameras', '--mirror=1')


# ----------------------------------------------------------------------------------------------
# Metrics, device, grid and other values.


def test_metrics_default_to_fid50k_full_and_detectors_are_recorded(tmp_path, data):
    args = [a for a in base_args(data['cameras']) if not a.startswith('--metrics=')]
    options, _ = dry_run(tmp_path / 'out', *args)
    assert options['metrics'] == ['fid50k_full'] and options['metric_detectors'] == {}
    inception, vgg = tmp_path / 'inception.pth', tmp_path / 'vgg.pth'
    inception.write_bytes(b'x')
    vgg.write_bytes(b'x')
    options, _ = dry_run(tmp_path / 'out', *args, f'--detector={inception}', f'--detector=vgg16={vgg}')
    assert options['metric_detectors'] == dict(inception=str(inception), vgg16=str(vgg))
    assert_error(invoke(tmp_path / 'out', *args, '--detector=missing.pth'), tmp_path / 'out', 'missing.pth')


def test_an_unavailable_detector_is_reported_before_training(tmp_path, data, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'empty-cache'))
    monkeypatch.setattr(dnnlib.util, '_download', lambda url, *args, **kwargs: (_ for _ in ()).throw(OSError('offline')))
    args = [a for a in base_args(data['cameras']) if not a.startswith('--metrics=')]
    message = assert_error(invoke(tmp_path / 'out', *args, '--metrics=fid2k_full'), tmp_path / 'out', '--metrics=none')
    assert 'pt_inception-2015-12-05' in message and str(tmp_path / 'empty-cache' / 'downloads') in message


def test_raycond_configs_need_camera_labels(tmp_path, data):
    args = [a for a in base_args(data['cameras']) if not a.startswith('--cfg=')]
    assert_error(invoke(tmp_path / 'out', *args, '--cfg=raycond2'), tmp_path / 'out', '--cfg=raycond2', 'camera labels', '--cond=1')
    assert_error(invoke(tmp_path / 'out', *[a for a in base_args(data['classes']) if not a.startswith('--cfg=')],
                        '--cfg=raycond3-t', '--cond=1'), tmp_path / 'out', 'camera labels')
    options, _ = dry_run(tmp_path / 'out', *args, '--cfg=raycond3-r', '--cond=1')
    assert options['G_kwargs']['class_name'] == 'training.networks_raycond3.Generator'
    assert options['G_kwargs']['legacy_rays'] is False and options['G_kwargs']['use_radial_filters'] is True
    assert options['loss_kwargs']['class_name'] == 'training.loss.RayConditioningLoss'


def test_gram_configs_need_camera_labels_and_refuse_stylegan_options(tmp_path, data):
    args = [a for a in base_args(data['cameras']) if not a.startswith('--cfg=')]
    out = tmp_path / 'out'
    assert_error(invoke(out, *args, '--cfg=gram-ffhq', '--cond=0'), out, '--cfg=gram-ffhq', 'camera labels', '--cond=1')
    assert_error(invoke(out, *[a for a in base_args(data['classes']) if not a.startswith('--cfg=')], '--cfg=gram-cats'),
                 out, 'camera labels')
    assert_error(invoke(out, *args, '--cfg=gram-carla', '--map-depth=4'), out, '--map-depth', 'gram-carla', 'drop it')
    assert_error(invoke(out, *args, '--cfg=gram-ffhq', '--freezed=1'), out, '--freezed', 'drop it')
    # GRAM's D has no minibatch-std layer: chunks of one image are fine (GRAM's own layout).
    options, _ = dry_run(out, *args, '--cfg=gram-ffhq', '--batch-gpu=1')
    assert options['batch_gpu'] == 1 and options['loss_kwargs']['class_name'] == 'training.loss.GramLoss'
    assert options['training_set_kwargs']['use_labels'] is True and 'augment_kwargs' not in options  # --cond, --aug defaults
    assert options['D_opt_kwargs']['lr'] == 2e-4 and options['G_opt_kwargs']['lr'] == 2e-5
    assert options['loss_kwargs']['r1_gamma'] == 1  # --gamma is GRAM's r1_lambda
    assert dry_run(out, *args, '--cfg=gram-ffhq', '--dlr=0.001')[0]['D_opt_kwargs']['lr'] == 0.001
    assert dry_run(out, *args, '--cfg=gram-ffhq', '--patch_split=4')[0]['loss_kwargs']['patch_split'] == 4
    assert_error(invoke(out, *args, '--cfg=stylegan2', '--patch-split=2'), out, '--patch-split', 'gram configs', 'drop it')


@pytest.mark.parametrize('value', ['nosuchmetric', 'fid50k_full,nosuchmetric'])
def test_unknown_metric(tmp_path, data, value):
    args = [a for a in base_args(data['cameras']) if not a.startswith('--metrics=')]
    assert_error(invoke(tmp_path / 'out', *args, f'--metrics={value}'), tmp_path / 'out', '--metrics=')


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_cuda_without_cuda(tmp_path, data):
    args = [a for a in base_args(data['cameras']) if not a.startswith('--device=')]
    assert_error(invoke(tmp_path / 'out', *args, '--device=cuda'), tmp_path / 'out', '--device=cuda', '--device=cpu')


@pytest.mark.parametrize('grid', ['3x', 'x3', '0x3', '3x0', '3*3', '3x3x3', 'abc', '-2x2', ''])
def test_malformed_grid(tmp_path, data, grid):
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'], f'--grid={grid}')), tmp_path / 'out',
                 f'--grid={grid} ', 'COLUMNSxROWS')


def test_grid(tmp_path, data):
    options, _ = dry_run(tmp_path / 'out', *base_args(data['cameras'], '--grid=3x2'))
    assert options['grid_size'] == [3, 2]


@pytest.mark.parametrize('option', ['--gamma=nan', '--gamma=inf', '--glr=nan', '--dlr=inf', '--p=nan',
                                    '--target=nan', '--kimg=inf', '--tick=nan', '--glr=-inf'])
def test_non_finite_numbers(tmp_path, data, option):
    """The option type (dnnlib.cli.FiniteFloat) refuses them: click's usage error, as for any other bad value."""
    args = [a for a in base_args(data['cameras']) if not a.startswith('--gamma=')]
    if not option.startswith('--gamma='):
        args.append('--gamma=1')
    result = invoke(tmp_path / 'out', *args, option)
    name, value = option.split('=')
    assert result.exit_code == 2, (result.output, result.exception)
    assert 'Traceback' not in result.output
    assert result.output.strip().splitlines()[-1].startswith(f"Error: Invalid value for '{name}': '{value}' is not a finite number")
    assert_no_run_dir(tmp_path / 'out')


def test_outdir_that_is_a_file(tmp_path, data):
    outdir = tmp_path / 'out'
    outdir.write_text('a file\n')
    result = invoke(outdir, *base_args(data['cameras']))
    assert_error(result, tmp_path / 'nothing', f'--outdir={outdir}')
    assert outdir.read_text() == 'a file\n'


def test_outdir_that_cannot_be_written(tmp_path, data, monkeypatch):
    """dnnlib.cli.check_output_path in _validate (also for --dry-run): under a file, or in a read-only folder."""
    (tmp_path / 'file').write_text('x')
    outdir = tmp_path / 'file' / 'runs'
    assert_error(invoke(outdir, *base_args(data['cameras'])), outdir, f'--outdir={outdir}', 'which is a file')
    (tmp_path / 'locked').mkdir()
    locked = make_read_only(tmp_path / 'locked', monkeypatch)  # as root, os.access is made to honour the mode bits
    assert_error(invoke(locked / 'runs', *base_args(data['cameras'])), locked / 'runs', f'--outdir={locked / "runs"}', 'not writable')
    assert_error(invoke(locked, *base_args(data['cameras'], '--dry-run')), locked, f'--outdir={locked}', 'not writable', before=[])


def test_desc_with_a_path_separator(tmp_path, data):
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'], '--desc=../escape')), tmp_path / 'out',
                 '--desc=../escape')
    assert sorted(os.listdir(tmp_path)) == []


# ----------------------------------------------------------------------------------------------
# --resume.


class _WritesAFile:
    """Unpickling this with plain pickle would create `path`: the no-exec loader must refuse it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_resume_missing_path(tmp_path, data):
    missing = tmp_path / 'nothing-here.pkl'
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'], f'--resume={missing}')), tmp_path / 'out',
                 str(missing))


def test_resume_empty_directory(tmp_path, data):
    empty = tmp_path / 'empty-run'
    os.makedirs(empty)
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'], f'--resume={empty}')), tmp_path / 'out',
                 str(empty), 'network-snapshot')


def test_resume_file_that_is_not_a_pickle(tmp_path, data):
    path = tmp_path / 'network-snapshot-000100.pkl'
    path.write_text('certainly not a pickle\n')
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'], f'--resume={path}')), tmp_path / 'out', str(path))


def test_resume_pickle_that_is_not_a_snapshot(tmp_path, data):
    path = tmp_path / 'other.pkl'
    path.write_bytes(pickle.dumps({'weights': [1, 2, 3]}))
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'], f'--resume={path}')), tmp_path / 'out',
                 str(path), 'not a network snapshot')


def test_resume_pickle_with_code_is_refused_without_running_it(tmp_path, data):
    marker = tmp_path / 'code-ran'
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps({'G': _WritesAFile(str(marker))}))
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'], f'--resume={path}')), tmp_path / 'out', str(path))
    assert not marker.exists()


@pytest.fixture(scope='module')
def untrained_snapshots(tmp_path_factory):
    """Snapshots of tiny 16x16 generators: RGB unconditional, grayscale, and with 2 classes."""
    root = tmp_path_factory.mktemp('snapshots')
    return dict(rgb=tiny_networks.save_snapshot(root / 'rgb.pkl', tiny_networks.stylegan2_generator()),
                gray=tiny_networks.save_snapshot(root / 'gray.pkl', tiny_networks.stylegan2_generator(channels=1)),
                classes=tiny_networks.save_snapshot(root / 'classes.pkl', tiny_networks.stylegan2_generator(c_dim=2)))


@pytest.mark.parametrize('snapshot, dataset, extra, words', [
    ('rgb', 'res32', [], ['16x16 images', '32x32 images']),
    ('gray', 'classes', [], ['1 channel(s)', '3 channel(s)']),
    ('rgb', 'classes', ['--cond=1'], ['no labels', '2-dimensional labels with --cond=1']),
    ('classes', 'classes', [], ['2-dimensional labels', 'no labels with --cond=0']),
])
def test_resume_from_a_network_for_other_data(tmp_path, data, untrained_snapshots, snapshot, dataset, extra, words):
    """Checked in build_run against the dataset's facts, before any run directory exists."""
    path = write_png_folder(tmp_path / 'res32', 32) if dataset == 'res32' else data[dataset]
    pkl = untrained_snapshots[snapshot]
    assert_error(invoke(tmp_path / 'out', *base_args(path, f'--resume={pkl}', *extra)), tmp_path / 'out',
                 f'--resume={pkl}', f'--data={path}', *words)


def test_resume_from_a_network_for_the_same_data_or_one_the_config_widens(tmp_path, data, untrained_snapshots):
    dry_run(tmp_path / 'out', *base_args(data['classes'], f'--resume={untrained_snapshots["rgb"]}'))
    # Ray Conditioning starts from 2D StyleGAN weights: its camera labels may meet a network without labels.
    args = [a for a in base_args(data['cameras'], '--cond=1', f'--resume={untrained_snapshots["rgb"]}') if a != '--cfg=stylegan2']
    dry_run(tmp_path / 'out', '--cfg=raycond2', *args)


def test_resume_without_options_needs_a_training_state(tmp_path, data):
    path = tmp_path / 'other.pkl'
    path.write_bytes(pickle.dumps({'weights': [1, 2, 3]}))
    assert_error(invoke(tmp_path / 'out', f'--resume={path}'), tmp_path / 'out', '--data', '--resume')


def test_resume_corrupt_training_state(tmp_path, data):
    run = tmp_path / 'run'
    os.makedirs(run)
    (run / 'network-snapshot-000000.pkl').write_text('garbage\n')
    (run / 'training-state-000000.pt').write_text('garbage\n')
    message = assert_error(invoke(tmp_path / 'out', f'--resume={run}'), tmp_path / 'out', 'training-state-000000.pt')
    assert 'weights_only' not in message


# ----------------------------------------------------------------------------------------------
# --dry-run and the run directory name.


def test_dry_run_prints_options_and_creates_nothing(tmp_path, data):
    outdir = tmp_path / 'deep' / 'out'
    options, run_dir = dry_run(outdir, *base_args(data['cameras'], '--kimg=2', '--seed=3'))
    assert not os.path.exists(tmp_path / 'deep')
    assert run_dir == os.path.join(str(outdir), '00000-stylegan2-shapes16-gpus1-batch8-gamma1')
    assert options['total_kimg'] == 2 and options['random_seed'] == 3 and options['metrics'] == []
    assert options['training_set_kwargs']['path'] == data['cameras']
    assert options['training_set_kwargs']['max_size'] == 16
    assert options['G_kwargs']['class_name'] == 'training.networks_stylegan2.Generator'
    assert options['loss_kwargs']['r1_gamma'] == 1
    assert os.listdir(tmp_path) == []


def test_run_dir_takes_the_next_free_number(tmp_path, data):
    outdir = tmp_path / 'out'
    for name in ('00000-x', '00007-y', 'notes'):
        os.makedirs(outdir / name)
    (outdir / '00042-a-file.txt').write_text('files do not count\n')
    _, run_dir = dry_run(outdir, *base_args(data['cameras']))
    assert run_dir == os.path.join(str(outdir), '00008-stylegan2-shapes16-gpus1-batch8-gamma1')
    _, run_dir = dry_run(outdir, *base_args(data['classes'], '--desc=try2'))
    assert run_dir == os.path.join(str(outdir), '00008-stylegan2-classes16-gpus1-batch8-gamma1-try2')


@pytest.mark.parametrize('gamma, text', [('0.5', 'gamma0.5'), ('10', 'gamma10'), ('10.0', 'gamma10'),
                                         ('0.0002', 'gamma0.0002'), ('0', 'gamma0'), ('6.5536', 'gamma6.5536')])
def test_run_dir_gamma_format(tmp_path, data, gamma, text):
    args = [a for a in base_args(data['cameras']) if not a.startswith('--gamma=')]
    _, run_dir = dry_run(tmp_path / 'out', *args, f'--gamma={gamma}')
    assert run_dir.endswith(f'-batch8-{text}')


def test_help_lists_every_option():
    result = CliRunner().invoke(train.main, ['--help'])
    assert result.exit_code == 0
    for option in ['--outdir', '--cfg', '--data', '--gpus', '--batch', '--gamma', '--cond', '--mirror', '--aug',
                   '--resume', '--freezed', '--p', '--target', '--batch-gpu', '--cbase', '--cmax', '--glr', '--dlr',
                   '--map-depth', '--mbstd-group', '--desc', '--metrics', '--kimg', '--tick', '--snap', '--seed',
                   '--fp32', '--nobench', '--workers', '-n, --dry-run', '--device', '--mirror-cameras', '--grid',
                   '--trust-code']:
        assert re.search(rf'^\s+{re.escape(option)}\b', result.output, re.MULTILINE), option


# ----------------------------------------------------------------------------------------------
# torchrun decides the process count.


def test_torchrun_sets_the_process_count(tmp_path, data, monkeypatch):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '2')
    args = [a for a in base_args(data['cameras']) if not a.startswith('--gpus=')]
    options, run_dir = dry_run(tmp_path / 'out', *args)
    assert options['num_gpus'] == 2 and options['batch_gpu'] == 4
    assert '-gpus2-' in run_dir
    assert_error(invoke(tmp_path / 'out', *args, '--gpus=3'), tmp_path / 'out', '--gpus=3', 'torchrun')


@pytest.mark.parametrize('env, words', [({'RANK': '0'}, ['WORLD_SIZE']), ({'RANK': '0', 'WORLD_SIZE': 'two'}, ['WORLD_SIZE'])])
def test_torchrun_variables_that_make_no_sense(tmp_path, data, monkeypatch, env, words):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert_error(invoke(tmp_path / 'out', *base_args(data['cameras'])), tmp_path / 'out', *words)


# ----------------------------------------------------------------------------------------------
# Real processes.


def test_script_error_has_no_traceback(tmp_path, data):
    proc = run_script(tmp_path / 'out', *base_args(data['res24'], '--batch-gpu=3'))
    assert_script_error(proc, '--batch=8', '--batch-gpu')
    assert proc.stdout == ''
    assert_no_run_dir(tmp_path / 'out')


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, data):
    """One real two-tick run on the CPU; -> (outdir, run dir, process)."""
    outdir = tmp_path_factory.mktemp('runs')
    proc = run_script(outdir, *base_args(data['cameras'], '--batch=4', '--kimg=0.008', '--tick=0.004', '--snap=1', *TINY))
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    (name,) = os.listdir(outdir)
    return str(outdir), os.path.join(str(outdir), name), proc


def test_tiny_training_run(finished_run):
    outdir, run_dir, proc = finished_run
    assert os.path.basename(run_dir) == '00000-stylegan2-shapes16-gpus1-batch4-gamma1'
    assert 'Traceback' not in proc.stdout + proc.stderr
    files = os.listdir(run_dir)
    for name in ('training_options.json', 'log.txt', 'reals.png', 'fakes_init.png', 'fakes000000.png', 'stats.jsonl'):
        assert name in files, (name, files)
    assert any(re.fullmatch(r'network-snapshot-000000(-\d+)?\.pkl', f) for f in files), files
    assert any(re.fullmatch(r'training-state-000000(-\d+)?\.pt', f) for f in files), files
    assert any(f.startswith('events.out.tfevents.') for f in files), files
    assert not any('.tmp-' in f for f in files), files
    with open(os.path.join(run_dir, 'training_options.json')) as f:
        options = json.load(f)
    assert options['batch_size'] == 4 and options['grid_size'] == [2, 2]
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == 2 and all('timestamp' in line for line in lines)
    with PIL.Image.open(os.path.join(run_dir, 'reals.png')) as image:
        assert image.size == (32, 32)
    with open(os.path.join(run_dir, 'log.txt')) as f:
        assert 'kimg 0.008' in f.read()


def test_resume_finished_run_dry_run(finished_run):
    outdir, run_dir, _ = finished_run
    options, next_dir = dry_run(outdir, f'--resume={run_dir}')
    assert os.path.basename(next_dir) == '00001-stylegan2-shapes16-gpus1-batch4-gamma1'
    assert options['resume_pkl'].startswith(os.path.join(run_dir, 'network-snapshot-000000'))
    assert options['resume_state'] is not None
    assert options['batch_size'] == 4 and options['grid_size'] == [2, 2]


def test_resume_with_other_shapes_leaves_no_run_dir(tmp_path, finished_run, data):
    """The shape check runs inside the training loop, after the run directory was made: it must go again."""
    _, run_dir, _ = finished_run
    snapshot = sorted(f for f in os.listdir(run_dir) if f.startswith('network-snapshot-'))[0]
    outdir = tmp_path / 'out'
    proc = run_script(outdir, *base_args(data['cameras'], '--batch=4', '--kimg=0.004', f'--resume={run_dir}/{snapshot}',
                                         *TINY, '--cmax=32'))
    assert_script_error(proc, snapshot, '--cmax')
    assert os.listdir(outdir) == []


def test_corrupt_image_found_by_the_training_loop_leaves_no_run_dir(tmp_path, data):
    outdir = tmp_path / 'out'
    proc = run_script(outdir, *base_args(data['corrupt'], '--batch=4', '--kimg=0.004', *TINY))
    assert_script_error(proc, '3.png', data['corrupt'])
    assert os.listdir(outdir) == []


@pytest.fixture(scope='module')
def dataloader_worker_failure(tmp_path_factory, data):
    """A run whose first corrupt image is read by a DataLoader worker process; -> (outdir, process)."""
    outdir = tmp_path_factory.mktemp('worker-failure') / 'out'
    args = [a for a in TINY if not a.startswith(('--workers=', '--grid='))]
    # The 1x1 grid (seed 0) shows image 2; image 3 is first read by the worker.
    proc = run_script(outdir, *base_args(data['corrupt'], '--batch=4', '--kimg=0.004', '--workers=1', '--grid=1x1', *args),
                      timeout=45)  # the worker ignores SIGTERM: an exit that does not stop it first hangs
    return outdir, proc


def test_corrupt_image_found_by_a_dataloader_worker_exits(dataloader_worker_failure):
    outdir, proc = dataloader_worker_failure
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert proc.stderr.startswith('Error: ') and '3.png' in proc.stderr, proc.stderr
    assert os.listdir(outdir) == []


def test_corrupt_image_found_by_a_dataloader_worker_is_one_sentence(dataloader_worker_failure):
    _, proc = dataloader_worker_failure
    assert_script_error(proc, '3.png')


def test_metrics_none_mixed_with_names(tmp_path, data):
    args = [a for a in base_args(data['cameras']) if not a.startswith('--metrics=')]
    message = assert_error(invoke(tmp_path / 'out', *args, '--metrics=none,fid50k_full'), tmp_path / 'out', 'mixes "none"')
    assert 'use --metrics=none' not in message


# ----------------------------------------------------------------------------------------------
# Label values, checked when the dataset is inspected: before any run directory exists.


def write_labelled_folder(folder, labels):
    write_png_folder(folder, 16, count=len(labels), labels=False)
    with open(os.path.join(folder, 'dataset.json'), 'w') as f:
        json.dump({'labels': [[f'{i}.png', label] for i, label in enumerate(labels)]}, f)  # NaN is written as NaN
    return str(folder)


def test_a_nan_label_fails_before_training_naming_the_image(tmp_path):
    folder = write_labelled_folder(tmp_path / 'nan', [[0.5, 1.0], [0.5, float('nan')], [0.5, 2.0], [0.5, 3.0]])
    message = assert_error(invoke(tmp_path / 'out', *base_args(folder, '--cond=1')), tmp_path / 'out',
                           '1.png', folder, 'NaN or infinite')
    assert 'learning rate' not in message


def test_raycond_on_25_floats_that_are_not_cameras_says_what_is_wrong(tmp_path):
    from training import cameras
    labels = [label[:22] + [0.0, 0.0, 2.0] for label in cameras.lookat_labels([0.0] * 4, [0.1] * 4).tolist()]
    folder = write_labelled_folder(tmp_path / 'poses', labels)
    args = [a for a in base_args(folder, '--cond=1') if not a.startswith('--cfg=')]
    message = assert_error(invoke(tmp_path / 'out', *args, '--cfg=raycond2'), tmp_path / 'out',
                           '--cfg=raycond2', "'0.png'", 'not a valid camera', 'last intrinsics row must be (0, 0, 1)')
    assert 'pass --cond=1' not in message


# ----------------------------------------------------------------------------------------------
# A run that ends before its first snapshot leaves no run directory (or says why it keeps it).


@pytest.fixture
def fake_loop(monkeypatch):
    """Replace the training loop with `behaviour(run_dir)`; -> a function running train._worker in-process."""
    import training.training_loop as loop_module

    def run(behaviour, outdir):
        monkeypatch.setattr(loop_module, 'training_loop', lambda run_dir, **kwargs: behaviour(run_dir))
        train._worker(dnnlib.EasyDict(device='cpu', total_kimg=1), str(outdir), 'fake', [])
    return run


def _raises(error):
    def behaviour(run_dir):
        raise error
    return behaviour


def _writes_then_raises(name, error):
    def behaviour(run_dir):
        with open(os.path.join(run_dir, name), 'w') as f:
            f.write('x')
        raise error
    return behaviour


def test_a_bug_during_start_up_removes_the_run_dir_and_shows_its_traceback(tmp_path, fake_loop, capsys):
    with pytest.raises(RuntimeError, match='a bug'):
        fake_loop(_writes_then_raises('reals.png', RuntimeError('a bug')), tmp_path / 'out')
    assert os.listdir(tmp_path / 'out') == []
    assert f'Removed the run directory {tmp_path / "out" / "00000-fake"}, which held no snapshot yet.' in capsys.readouterr().err


def test_ctrl_c_during_start_up_removes_the_run_dir_in_one_line(tmp_path, fake_loop, capsys):
    with pytest.raises(SystemExit) as info:
        fake_loop(_raises(KeyboardInterrupt()), tmp_path / 'out')
    assert info.value.code == 130
    assert os.listdir(tmp_path / 'out') == []
    err = capsys.readouterr().err
    assert err == f'Interrupted. Removed the run directory {tmp_path / "out" / "00000-fake"}, which held no snapshot yet.\n'


@pytest.mark.parametrize('behaviour, code, words', [
    (_writes_then_raises('network-snapshot-000000.pkl', KeyboardInterrupt()), 130, ['Interrupted.', 'it holds a network snapshot']),
    (_writes_then_raises('my-notes.txt', DatasetError('Image x is broken.')), 1,
     ['Error: Image x is broken.', 'it holds my-notes.txt, which this run did not write']),
])
def test_a_run_dir_with_something_of_value_is_kept_saying_why(tmp_path, fake_loop, capsys, behaviour, code, words):
    with pytest.raises(SystemExit) as info:
        fake_loop(behaviour, tmp_path / 'out')
    assert info.value.code == code
    run_dir = tmp_path / 'out' / '00000-fake'
    assert run_dir.is_dir() and (run_dir / 'training_options.json').is_file()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and f'The run directory {run_dir} is kept: ' in lines[0], lines
    for word in words:
        assert word in lines[0]
    assert (run_dir / 'log.txt').read_text().endswith(lines[0] + '\n')


def test_a_non_finite_loss_before_the_first_snapshot_keeps_the_log(tmp_path, fake_loop, capsys):
    from training.training_loop import NonFiniteLossError
    with pytest.raises(SystemExit) as info:
        fake_loop(_raises(NonFiniteLossError('A non-finite loss appeared.')), tmp_path / 'out')
    assert info.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith('Error: A non-finite loss appeared. The run directory ') and 'its log' in line
    assert os.path.isfile(tmp_path / 'out' / '00000-fake' / 'log.txt')


def _silent_server():
    """A TCP server that accepts one connection and never answers; -> (port, event set once it accepted, socket)."""
    import socket
    import threading
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    accepted, connections = threading.Event(), []

    def serve():
        try:
            connections.append(server.accept()[0])
            accepted.set()
        except OSError:  # closed by the test
            pass
    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], accepted, server, connections


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_during_start_up_removes_the_run_dir(tmp_path, data, signum):
    """The run starts, makes its run directory and blocks downloading --resume from a server that never answers
    (before the training loop's first step); then the signal comes."""
    port, accepted, server, connections = _silent_server()
    outdir = tmp_path / 'out'
    env = {key: value for key, value in os.environ.items() if key not in TORCHRUN_VARIABLES}
    env.update(OMP_NUM_THREADS='1', DNNLIB_CACHE_DIR=str(tmp_path / 'cache'))
    run_dirs = []

    def started():  # downloading --resume, with its run directory made
        if accepted.is_set() and not run_dirs:
            (name,) = os.listdir(outdir)
            assert os.path.isfile(outdir / name / 'training_options.json')
            run_dirs.append(name)
        return bool(run_dirs)
    try:
        returncode, out, err = signal_when_ready(
            [sys.executable, 'train.py', f'--outdir={outdir}', *base_args(data['cameras'], '--batch=4', '--kimg=1', *TINY),
             f'--resume=http://127.0.0.1:{port}/network-snapshot.pkl'], started, signum, cwd=REPO, env=env)
    finally:
        server.close()
        for connection in connections:
            connection.close()
    (name,) = run_dirs
    assert returncode == 128 + signum, (returncode, out[-2000:], err[-2000:])
    assert 'Traceback' not in out + err
    prefix = 'Interrupted.' if signum == signal.SIGINT else 'Interrupted by SIGTERM.'
    assert err.splitlines() == [f'{prefix} Removed the run directory {outdir / name}, which held no snapshot yet.'], err
    assert os.listdir(outdir) == []


def test_ctrl_c_before_the_run_exits_130_in_one_line(tmp_path, data, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, 'build_run', interrupted)
    result = invoke(tmp_path / 'out', *base_args(data['cameras']))
    assert result.exit_code == 130 and result.stderr == 'Interrupted.\n' and result.stdout == ''
    assert_no_run_dir(tmp_path / 'out')
