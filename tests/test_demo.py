"""scripts/demo.sh (`make demo`) end to end at a tiny length: every output exists with the shape the
README promises, and the dataset is made once."""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import PIL.Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_writes_the_sweep_the_video_and_the_pose_error(tmp_path):
    demo_dir = tmp_path / 'demo'
    demo_dir.mkdir()
    # A small dataset made beforehand: the demo must reuse it, not render its own 4000 images.
    subprocess.run([sys.executable, 'dataset_tool.py', '--source=synthetic:shapes', f'--dest={demo_dir}/shapes-32.zip',
                    '--resolution=32x32', '--max-images=200'], cwd=REPO, check=True, capture_output=True)
    env = dict(os.environ, PYTHON=sys.executable, DEMO_DIR=str(demo_dir), DEMO_KIMG='0.064', OMP_NUM_THREADS='2')
    result = subprocess.run(['bash', 'scripts/demo.sh'], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'dataset: reusing {demo_dir}/shapes-32.zip' in result.stdout

    runs = sorted(p for p in (demo_dir / 'runs').iterdir())
    assert len(runs) == 1 and runs[0].name.endswith('-raycond2-shapes-32-gpus1-batch32-gamma0.1-demo')
    out = runs[0] / 'demo'
    lines = result.stdout.splitlines()
    assert f'  yaw sweep:     {out}/yaw_sweep.png (rows: seeds 0-7; columns: yaw -0.5,-0.33,-0.17,0,0.17,0.33,0.5)' in lines
    assert f'  orbit video:   {out}/orbit.mp4' in lines

    sweep = np.asarray(PIL.Image.open(out / 'yaw_sweep.png'))
    assert sweep.shape == (8 * 32, 7 * 32, 3)  # rows: 8 seeds, columns: 7 yaws
    frames = iio.imread(out / 'orbit.mp4')
    assert frames.shape == (120, 2 * 32, 4 * 32, 3)
    assert not (out / 'yaw_sweep').exists()  # the temporary folder is gone

    records = {r['subject']: r for r in map(json.loads, (out / 'pose_error.jsonl').read_text().splitlines())}
    assert set(records) == {'regressor_heldout', 'mean_pose', 'renderer', 'trained', 'untrained'}
    assert all(np.isfinite(records[s]['yaw_deg']) and np.isfinite(records[s]['pitch_deg']) for s in records)
    table = [line.split() for line in lines if line.split()[:1] in (['trained'], ['untrained'])]
    assert [row[0] for row in table] == ['untrained', 'trained']
    assert float(table[1][1]) == round(records['trained']['yaw_deg'], 1)
