"""calc_metrics.py end to end on tiny pickles: the result, the run-directory log, 1 vs 2 processes, and errors."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'tests', 'metrics'))
import calc_metrics  # noqa: E402
import metric_fixtures as fx  # noqa: E402
import tiny_networks  # noqa: E402
from cli_checks import assert_cli_error as assert_error  # noqa: E402
from cli_checks import make_read_only  # noqa: E402
from metrics import detectors  # noqa: E402
from training import generation, networks_stylegan2  # noqa: E402


def save_snapshot(path, G, data_path):
    kwargs = None if data_path is None else fx.dataset_kwargs(data_path, use_labels=False, max_size=None, xflip=False,
                                                              resolution=G.img_resolution, random_seed=0)
    D = networks_stylegan2.Discriminator(c_dim=G.c_dim, img_resolution=8, img_channels=G.img_channels,
                                         channel_base=32, channel_max=4)
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=kwargs), f)
    return str(path)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('calc')
    data = fx.write_dataset(root / 'data.zip', 37)  # odd: two processes share the items unevenly
    run_dir = root / 'run'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text('{}')
    G = tiny_networks.stylegan2_generator()  # noise strengths are 0 at initialisation
    noisy = tiny_networks.stylegan2_generator()
    for name, param in noisy.named_parameters():
        if name.endswith('noise_strength'):
            param.data.fill_(0.5)
    return dict(
        data=data, run_dir=str(run_dir), G=G,
        snapshot=save_snapshot(run_dir / 'network-snapshot-000000.pkl', G, data),
        noisy=save_snapshot(root / 'noisy.pkl', noisy, data),
        bare=save_snapshot(root / 'bare.pkl', G, None),
        conditional=save_snapshot(root / 'cond.pkl', tiny_networks.stylegan2_generator(c_dim=3), None),
        detector=tiny_networks.save_pooled_feature_detector(root / 'pooled.pt'),
        weight=tiny_networks.PooledFeatureDetector().weight.numpy())


def run_cli(*args, env=None, cache=None):
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS='1')
    if cache is not None:
        env['DNNLIB_CACHE_DIR'] = str(cache)
    proc = subprocess.run([sys.executable, 'calc_metrics.py', *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc


def json_results(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{')]


def test_fid2k_full_on_the_cpu_equals_a_recomputation_and_is_logged_in_the_run_dir(files, tmp_path):
    proc = run_cli('--metrics=fid2k_full', f'--network={files["snapshot"]}', '--device=cpu',
                   f'--detector={files["detector"]}', cache=tmp_path / 'cache')
    assert proc.returncode == 0, proc.stderr
    [result] = json_results(proc.stdout)
    assert result['metric'] == 'fid2k_full' and result['num_gpus'] == 1
    assert result['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    with open(os.path.join(files['run_dir'], 'metric-fid2k_full.jsonl')) as f:
        assert [json.loads(line)['results'] for line in f] == [result['results']]

    G = files['G']
    z = torch.from_numpy(fx.official_latents(0, range(2000), G.z_dim))
    with torch.no_grad():
        images = torch.cat([generation.synthesize(G, G.mapping(part, None), noise_mode='const') for part in z.split(500)])
    fake = fx.pooled_features(fx.quantize(images.numpy()), files['weight'])
    real = fx.pooled_features(fx.read_dataset_images(files['data']), files['weight'])
    assert result['results']['fid2k_full'] == pytest.approx(fx.fid_scipy(fake, real), rel=1e-5)


def test_two_processes_give_the_result_of_one(files, tmp_path):
    args = ['--metrics=fid2k_full', f'--network={files["noisy"]}', '--device=cpu', f'--detector={files["detector"]}',
            f'--data={files["data"]}']
    results = []
    for gpus in (1, 2):
        proc = run_cli(*args, f'--gpus={gpus}', cache=tmp_path / f'cache{gpus}')
        assert proc.returncode == 0, proc.stderr
        [result] = json_results(proc.stdout)
        assert result['num_gpus'] == gpus and result['snapshot_pkl'] == files['noisy']
        results.append(result['results']['fid2k_full'])
    assert results[0] > 0
    assert results[1] == pytest.approx(results[0], rel=1e-6)


def test_missing_detector_offline_is_one_sentence_naming_the_url_and_the_cache(files, tmp_path):
    env = fx.env_without_network(tmp_path)
    proc = run_cli('--metrics=fid2k_full', f'--network={files["snapshot"]}', '--device=cpu', env=env)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith('Error: ') and detectors.FID_INCEPTION_URL in message
    assert str(tmp_path / 'empty-cache' / 'downloads') in message
    assert not json_results(proc.stdout)


def invoke(*args):
    return CliRunner().invoke(calc_metrics.main, list(args))


@pytest.mark.parametrize('make_args, words', [
    (lambda f: ['--metrics=fid1k', f'--network={f["snapshot"]}'], ['fid1k', 'fid50k_full']),
    (lambda f: ['--metrics=', f'--network={f["snapshot"]}'], ['--metrics']),
    (lambda f: [f'--network={f["snapshot"]}.missing'], ['.missing']),
    (lambda f: [f'--network={f["bare"]}'], ['--data']),
    (lambda f: [f'--network={f["conditional"]}', f'--data={f["data"]}'], ['3-dimensional labels', 'no labels', '--data']),
    (lambda f: [f'--network={f["snapshot"]}', '--detector=missing.pth'], ['missing.pth']),
    (lambda f: [f'--network={f["snapshot"]}', f'--detector=resnet={f["detector"]}'], ['resnet', 'inception=PATH']),
    (lambda f: [f'--network={f["snapshot"]}', '--scale=2'], ['--scale']),
    (lambda f: [f'--network={f["snapshot"]}', f'--data={f["run_dir"]}'], ['No image files']),
])
def test_bad_input_is_one_sentence(files, make_args, words):
    assert_error(invoke(*make_args(files), '--device=cpu'), *words)


def test_eq_metrics_need_an_input_transform(files, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    result = invoke('--metrics=eqt50k_int', f'--network={files["bare"]}', f'--data={files["data"]}', '--device=cpu')
    assert_error(result, 'eqt50k_int')


def test_mirroring_a_camera_dataset_mirrors_its_poses(tmp_path):
    data = fx.write_dataset(tmp_path / 'cams.zip', 6, labels=fx.camera_labels(6))
    G = tiny_networks.camera_generator(img_resolution=16)
    opts = dict(data=data, scale=None, mirror=True, network='net.pkl')
    kwargs = calc_metrics.dataset_kwargs_for(type('Opts', (), opts), G, None)
    assert kwargs.xflip and kwargs.xflip_camera_labels and kwargs.use_labels and kwargs.resolution == G.img_resolution


def test_negative_seed_is_refused(files):
    result = invoke(f'--network={files["snapshot"]}', '--seed=-1', '--device=cpu')
    assert result.exit_code != 0 and 'Traceback' not in result.output and '--seed' in result.output


def test_ctrl_c_exits_130_in_one_line(monkeypatch):
    def interrupted(opts):
        raise KeyboardInterrupt
    monkeypatch.setattr(calc_metrics, 'prepare', interrupted)
    result = CliRunner().invoke(calc_metrics.main, ['--network=network.pkl', '--metrics=fid2k_full'])
    assert result.exit_code == 130, result.output
    assert result.output.strip() == 'Interrupted.' and 'Traceback' not in result.output


def test_non_finite_scale_is_a_usage_error(files):
    result = invoke(f'--network={files["snapshot"]}', '--scale=inf', '--device=cpu')
    assert result.exit_code == 2, result.output  # the option type, dnnlib.cli.FiniteFloat
    assert_error(result, "'--scale'", 'finite')


def test_read_only_run_directory_is_refused_before_any_work(files, tmp_path, monkeypatch):
    """The results are appended to the run directory's metric-*.jsonl: checked first, not after the metric."""
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text('{}')
    snapshot = save_snapshot(run_dir / 'network-snapshot-000000.pkl', files['G'], files['data'])
    make_read_only(run_dir, monkeypatch)  # as root, os.access is made to honour the mode bits
    result = invoke(f'--network={snapshot}', '--device=cpu')
    assert_error(result, f'the run directory {run_dir} of --network', 'not writable', 'copy the pickle out of it')
    assert sorted(os.listdir(run_dir)) == ['network-snapshot-000000.pkl', 'training_options.json']


def test_a_nan_label_is_named_not_reported_as_missing(files, tmp_path):
    labels = [[0.5, 1.0, 2.0] for _ in range(4)]
    labels[2][1] = float('nan')
    data = fx.write_dataset(tmp_path / 'nan.zip', 4, labels=labels)
    message = assert_error(invoke(f'--network={files["conditional"]}', f'--data={data}', '--device=cpu'),
                           'img00002.png', 'NaN or infinite')
    assert 'no labels' not in message


# ----------------------------------------------------------------------------------------------
# --scale and the resolution of the reference images.

@pytest.fixture(scope='module')
def scaled(tmp_path_factory):
    root = tmp_path_factory.mktemp('scaled')
    data = {side: fx.write_dataset(root / f'data{side}.zip', 3, resolution=side) for side in (16, 24, 32)}
    creps = tiny_networks.creps_generator()
    return dict(data=data, creps=save_snapshot(root / 'creps.pkl', creps, data[16]),
                sg2=save_snapshot(root / 'sg2.pkl', tiny_networks.stylegan2_generator(), data[16]))


@pytest.mark.parametrize('net, data, scale, words', [
    ('creps', 16, '--scale=2', ['data16.zip has 16x16 images', 'renders 32x32 at --scale=2 (int(16 * 2))',
                                '--scale=1 to render 16x16', 'a dataset of 32x32 images with --data']),
    ('creps', 24, None, ['data24.zip has 24x24 images', 'renders 16x16;', '--scale=1.5 to render 24x24',
                         'a dataset of 16x16 images']),
    ('creps', 24, '--scale=1.6', ['renders 25x25 at --scale=1.6', '--scale=1.5']),
    ('sg2', 32, None, ['data32.zip has 32x32 images', 'renders 16x16;', 'pass a dataset of 16x16 images with --data']),
])
def test_dataset_at_another_resolution_is_one_sentence_naming_both(scaled, net, data, scale, words, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError('the detectors were fetched before the resolutions were checked')
    monkeypatch.setattr(calc_metrics.metric_main, 'fetch_detectors', no_work)
    args = [f'--network={scaled[net]}', f'--data={scaled["data"][data]}', '--device=cpu'] + ([scale] if scale else [])
    message = assert_error(invoke(*args), *words)
    assert 'Traceback' not in message and (net == 'creps' or '--scale=' not in message)


def test_the_dataset_recorded_in_the_pickle_is_named_as_such(scaled):
    assert_error(invoke(f'--network={scaled["creps"]}', '--scale=2', '--device=cpu'),
                 'The dataset recorded in the pickle', 'data16.zip', 'renders 32x32')


@pytest.mark.parametrize('scale, data', [('1.5', 24), ('1.55', 24), ('2', 32)])
def test_scale_goes_to_the_generator_at_the_int_resolution(scaled, scale, data, monkeypatch):
    """int(16 * 1.55) = 24, as CREPS renders (round would ask for 25); the samples are rendered at that scale."""
    monkeypatch.setattr(calc_metrics.metric_main, 'fetch_detectors', lambda *args, **kwargs: None)
    opts = dict(network=scaled['creps'], metrics='fid2k_full', data=scaled['data'][data], mirror=None, gpus=1, device='cpu',
                scale=float(scale), detectors=(), seed=0, verbose=False, trust_code=False)
    args = calc_metrics.prepare(type('Opts', (), opts))
    assert args.G_kwargs.scale == float(scale) and args.dataset_kwargs.resolution == data
    from metrics import metric_utils
    sampling = metric_utils.MetricOptions(G=args.G, G_kwargs=args.G_kwargs, dataset_kwargs=args.dataset_kwargs,
                                          device=torch.device('cpu'))
    z = torch.randn([2, args.G.z_dim])
    with torch.no_grad():
        images = metric_utils.run_generator(sampling, z, torch.zeros([2, 0]))
    assert images.shape == (2, 3, data, data)
    with torch.no_grad():
        torch.testing.assert_close(images, args.G(z, None, scale=float(scale)))


@pytest.mark.parametrize('scale, words', [('0.01', ['--scale=0.01', '0 pixels', '--scale=0.0625']),
                                          ('2000', ['--scale', '32000x32000', '16384 pixels per side'])])
def test_scale_without_pixels_or_beyond_the_limit(scaled, scale, words):
    assert_error(invoke(f'--network={scaled["creps"]}', f'--scale={scale}', '--device=cpu'), *words)
