"""calc_metrics.py and train.py when the network accepts connections but never answers.

A detector download must end within the download budget (here DNNLIB_DOWNLOAD_TIMEOUT=3 s) with a
waiting line while it waits, then one sentence naming the cache path to fill by hand, printed once,
a non-zero exit, no traceback, and (train.py) no run directory. The only server is a loopback
listener that each test opens and closes.
"""

import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, 'tests'), os.path.join(REPO, 'tests', 'metrics')]
import dnnlib  # noqa: E402
import metric_fixtures as fx  # noqa: E402
import tiny_networks  # noqa: E402
import train  # noqa: E402
from loopback import PROXY_VARIABLES, SilentListener  # noqa: E402
from metrics import detectors  # noqa: E402

BUDGET_S = 3


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('stalled')
    return dict(data=fx.write_dataset(root / 'data.zip', 4),
                snapshot=tiny_networks.save_snapshot(root / 'net.pkl', tiny_networks.stylegan2_generator()))


@pytest.fixture
def silent():
    listener = SilentListener()
    yield listener
    listener.close()


def manual_path(cache, url):
    return os.path.join(str(cache), 'downloads', f'{dnnlib.util.url_cache_key(url)}_{os.path.basename(url)}')


def test_calc_metrics_behind_a_proxy_that_hangs(files, silent, tmp_path):
    """The default detector (an https URL) through a proxy that accepts the connection and says nothing."""
    env = {key: value for key, value in os.environ.items() if key not in PROXY_VARIABLES}
    env.update(OMP_NUM_THREADS='1', DNNLIB_CACHE_DIR=str(tmp_path / 'cache'), DNNLIB_DOWNLOAD_TIMEOUT=str(BUDGET_S),
               HTTPS_PROXY=f'http://127.0.0.1:{silent.port}', https_proxy=f'http://127.0.0.1:{silent.port}')
    start = time.monotonic()
    proc = subprocess.run([sys.executable, 'calc_metrics.py', '--metrics=fid50k_full', f'--network={files["snapshot"]}',
                           f'--data={files["data"]}', '--device=cpu'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert 'Traceback' not in output
    assert silent.connections, 'the download did not go through the proxy'
    url = detectors.FID_INCEPTION_URL
    advice = f'place it at {manual_path(tmp_path / "cache", url)}'
    assert output.count('place it at') == 1 and advice in proc.stderr, output
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith('Error: Could not download ' + url) and message.endswith(advice), message
    assert f'Downloading {url} ... (waiting for the server, 1 s)' in proc.stdout, proc.stdout
    assert f'no complete answer within {BUDGET_S} s' in message
    assert elapsed < 40, elapsed  # startup included; the download itself gives up after BUDGET_S


def test_train_reports_a_stalled_detector_download_before_a_run_directory_exists(silent, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('DNNLIB_DOWNLOAD_TIMEOUT', str(BUDGET_S))
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def launch(*args, **kwargs):
        raise AssertionError('train.py started training although the detector is missing')
    monkeypatch.setattr(train.distributed, 'launch', launch)
    data = tmp_path / 'data'
    _write_pngs(data, 4)
    url = silent.url('inception.pkl')
    outdir = tmp_path / 'out'
    start = time.monotonic()
    result = CliRunner().invoke(train.main, [f'--outdir={outdir}', '--cfg=stylegan2', f'--data={data}', '--gpus=1',
                                             '--batch=8', '--gamma=1', '--device=cpu', '--metrics=fid50k_full',
                                             f'--detector={url}'])
    elapsed = time.monotonic() - start
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and 'Traceback' not in result.output
    lines = result.stderr.strip().splitlines()
    advice = f'place it at {manual_path(tmp_path / "cache", url)}'
    assert len(lines) == 1 and lines[0].startswith(f'Error: Could not download {url}'), result.stderr
    assert result.output.count('place it at') == 1 and advice in lines[0] and '--metrics=none' in lines[0]
    assert f'Downloading {url} ... (waiting for the server, 1 s)' in result.stdout, result.stdout
    assert len(silent.connections) == 1
    assert not outdir.exists()  # checked before --outdir, let alone a run directory, is made
    assert elapsed < 40, elapsed


def _write_pngs(folder, count):
    import numpy as np
    import PIL.Image
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(os.path.join(folder, f'{i}.png'))
