"""The training loop: run-dir files, exact resume, multi-process equivalence, ADA control, stop signals.

Everything runs on the CPU with tiny networks (16x16 images, 16..32 channels) for a handful of steps.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import dataset_tool
from multiproc import REPO_ROOT, run_processes
from torch_utils import misc, persistence, training_stats
from training import configs, snapshots
from training.loss import StyleGAN2Loss
from training.training_loop import BatchSliceSampler, NonFiniteLossError, training_loop

#----------------------------------------------------------------------------
# Fixtures.

@pytest.fixture(autouse=True)
def restore_global_switches():
    """The loop switches process-wide settings on, as the official one does; other tests expect the defaults."""
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    saved = (conv2d_gradfix.enabled, grid_sample_gradfix.enabled, torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    (conv2d_gradfix.enabled, grid_sample_gradfix.enabled, torch.backends.cudnn.benchmark,
     torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved

@pytest.fixture(scope='module')
def shapes_zip(tmp_path_factory):
    """32 camera-labelled 16x16 images made by dataset_tool."""
    path = str(tmp_path_factory.mktemp('data') / 'shapes16.zip')
    result = CliRunner().invoke(dataset_tool.main, ['--source=synthetic:shapes', f'--dest={path}', '--resolution=16x16',
                                                    '--max-images=32', '--seed=1'])
    assert result.exit_code == 0, result.output
    return path

def tiny_options(data, run_dir, cfg='stylegan2', batch=8, batch_gpu=4, gpus=1, kimg=0.064, aug='noaug', cond=False,
                 train_options=None, **overrides):
    """training_loop kwargs of a tiny run, built by the real config registry (cond: the dataset's cameras as labels;
    train_options: more train.py options, e.g. a config's own)."""
    gram = cfg in configs.GRAM_CONFIGS  # GRAM's mapping has a fixed depth and its w_dim follows from its networks
    opts = dnnlib.EasyDict(cfg=cfg, data=data, cond=cond, mirror=False, mirror_cameras=False, aug=aug, p=0.5, target=0.6,
                           batch=batch, gpus=gpus, batch_gpu=batch_gpu, gamma=1, cbase=256, cmax=32, glr=None,
                           dlr=None if gram else 0.002, map_depth=None if gram else 2, mbstd_group=4, freezed=0,
                           fp32=False, kimg=kimg, tick=0.032, snap=1, seed=0, workers=0, nobench=False, metrics=[],
                           device='cpu', resolution=16, camera_labels=cond, dataset_size=32, **(train_options or {}))
    c = configs.build_training_options(opts)
    if gram:
        c.G_kwargs.z_dim = 16
    else:
        c.G_kwargs.z_dim = c.G_kwargs.w_dim = 32
    c.run_dir = str(run_dir)
    c.grid_size = [2, 2]
    del c.device
    for key, value in overrides.items():
        c[key] = value
    os.makedirs(c.run_dir, exist_ok=True)
    return c

def load_snapshot(path):
    with open(path, 'rb') as f:
        return persistence.load(f)  # no-exec: also proves our snapshots rebuild without running code

def final_snapshot(run_dir):
    path, state_path = snapshots.resolve_resume(str(run_dir))
    return load_snapshot(path), snapshots.load_training_state(state_path)

def named_tensors(module):
    return dict(list(module.named_parameters()) + list(module.named_buffers()))

#----------------------------------------------------------------------------

def test_short_run_writes_every_file_and_stays_finite(shapes_zip, tmp_path):
    c = tiny_options(shapes_zip, tmp_path / 'run', aug='ada', kimg=0.064)
    result = training_loop(**c)
    assert result.status == 'done' and result.cur_nimg == 64

    names = sorted(os.listdir(c.run_dir))
    for expected in ['reals.png', 'fakes_init.png', 'fakes000000.png', 'stats.jsonl', 'network-snapshot-000000.pkl',
                     'training-state-000000.pt']:
        assert expected in names
    assert any(name.startswith('events.out.tfevents') for name in names)
    assert not any(name.startswith('.') for name in names), 'temporary files left behind'

    ticks = [json.loads(line) for line in open(os.path.join(c.run_dir, 'stats.jsonl'))]
    assert len(ticks) == 3  # tick 0 after the first step, then every 0.032 kimg: 0.040, 0.064
    for tick in ticks:
        for name in ['Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/pl_penalty']:
            if name in tick:
                assert np.isfinite(tick[name]['mean']), name
    assert [tick['Progress/kimg']['mean'] for tick in ticks] == pytest.approx([0.008, 0.040, 0.064], rel=1e-6)

    data, state = final_snapshot(c.run_dir)
    assert set(data) == {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}
    assert data['training_set_kwargs']['path'] == shapes_zip
    assert state['cur_nimg'] == 64 and state['batch_idx'] == 8
    img = data['G_ema'](torch.randn([2, 32]), torch.zeros([2, 0]))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    for name, tensor in named_tensors(data['G']).items():
        assert torch.isfinite(tensor).all(), name

def test_metrics_at_each_snapshot_are_logged_and_a_failing_one_only_warns(shapes_zip, tmp_path, monkeypatch, capsys):
    import tiny_networks
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    detector = tiny_networks.save_pooled_feature_detector(tmp_path / 'pooled.pt')
    c = tiny_options(shapes_zip, tmp_path / 'run', kimg=0.008, metrics=['eqt50k_int', 'fid2k_full'],
                     metric_detectors=dict(inception=detector))
    assert training_loop(**c).status == 'done'
    assert 'Warning: eqt50k_int was not computed: Equivariance metrics need' in capsys.readouterr().out
    [line] = [json.loads(text) for text in open(os.path.join(c.run_dir, 'metric-fid2k_full.jsonl'))]
    assert line['metric'] == 'fid2k_full' and line['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    assert np.isfinite(line['results']['fid2k_full']) and line['results']['fid2k_full'] > 0
    assert not os.path.exists(os.path.join(c.run_dir, 'metric-eqt50k_int.jsonl'))

@pytest.mark.parametrize('cfg', ['raycond2', 'raycond3-t', 'raycond3-r'])
def test_raycond_configs_train_a_few_steps_with_cameras(shapes_zip, tmp_path, cfg):
    c = tiny_options(shapes_zip, tmp_path / 'run', cfg=cfg, kimg=0.016, cond=True, aug='ada',
                     **({} if cfg == 'raycond2' else dict(G_kwargs=_tiny_sg3(cfg))))
    assert c.loss_kwargs.class_name == 'training.loss.RayConditioningLoss' and c.G_kwargs.legacy_rays is False
    assert training_loop(**c).status == 'done'
    data, _ = final_snapshot(c.run_dir)
    G = data['G_ema']
    assert G.label_kind == 'camera' and G.c_dim == 25 and not G.legacy_rays
    for name, tensor in named_tensors(data['G']).items():
        assert torch.isfinite(tensor).all(), name
    assert set(c.augment_kwargs) == {'class_name', 'brightness', 'contrast', 'lumaflip', 'hue', 'saturation'}  # colour only

def _tiny_sg3(cfg):
    opts = dnnlib.EasyDict(cfg=cfg, data='x', cond=True, mirror=False, mirror_cameras=False, aug='noaug', p=0, target=0.6,
                           batch=8, gpus=1, batch_gpu=4, gamma=1, cbase=256, cmax=16, glr=None, dlr=0.002, map_depth=2,
                           mbstd_group=4, freezed=0, fp32=False, kimg=1, tick=1, snap=1, seed=0, workers=0, nobench=False,
                           metrics=[], device='cpu', resolution=16, camera_labels=True, dataset_size=32)
    G_kwargs = configs.build_training_options(opts).G_kwargs
    G_kwargs.z_dim = G_kwargs.w_dim = 32
    return G_kwargs

def test_raycond_needs_camera_labels(shapes_zip, tmp_path):
    with pytest.raises(ValueError, match='camera labels'):
        tiny_options(shapes_zip, tmp_path / 'run', cfg='raycond2', cond=False)

def test_raycond2_resumes_from_a_2d_stylegan2_snapshot(shapes_zip, tmp_path, capsys):
    base = tiny_options(shapes_zip, tmp_path / 'base', kimg=0.008)
    assert training_loop(**base).status == 'done'
    base_pkl, _ = snapshots.resolve_resume(base.run_dir)
    c = tiny_options(shapes_zip, tmp_path / 'ray', cfg='raycond2', cond=True, kimg=0.008, resume_pkl=base_pkl, ema_rampup=None)
    assert training_loop(**c).status == 'done'
    log = capsys.readouterr().out
    assert 'Weights of another model' in log and 'G.synthesis.b4.conv1.affine.weight' in log
    assert 'D.b4.out.weight' in log  # the label projection starts fresh
    data_2d = load_snapshot(base_pkl)

    # The first step changes the weights, so compare the resumed networks before training: rebuild one.
    G = dnnlib.util.construct_class_by_name(**c.G_kwargs, c_dim=25, img_resolution=16, img_channels=3)
    report = snapshots.copy_weights_by_name(data_2d, dict(G=G), base_pkl)
    src = dict(data_2d['G'].named_parameters())
    dst = dict(G.named_parameters())
    for name in report['widened']:
        tensor_name = name[2:]
        region = (slice(None),) * (0 if '.affine.' in tensor_name else 1) + (slice(0, src[tensor_name].shape[0 if '.affine.' in tensor_name else 1]),)
        torch.testing.assert_close(dst[tensor_name][region], src[tensor_name], rtol=0, atol=0)
    assert any('.conv0.weight' in name for name in report['widened'])
    assert not any('torgb' in name for name in report['widened'])  # raycond2's ToRGB has no rays

def test_stop_and_resume_is_bit_identical(shapes_zip, tmp_path):
    # Uninterrupted: 12 steps. Interrupted: 3 steps (not a multiple of the ADA or lazy-regularisation
    # intervals), then an exact resume for the other 9. ADA with a fast ada_kimg makes p move.
    common = dict(aug='ada', ada_kimg=0.1, augment_p=0.25)
    straight = tiny_options(shapes_zip, tmp_path / 'straight', kimg=0.096, **common)
    training_loop(**straight)
    first = tiny_options(shapes_zip, tmp_path / 'first', kimg=0.024, **common)
    training_loop(**first)
    pkl, state_path = snapshots.resolve_resume(first.run_dir)
    assert snapshots.load_training_state(state_path)['cur_nimg'] == 24
    second = tiny_options(shapes_zip, tmp_path / 'second', kimg=0.096, resume_pkl=pkl, resume_state=state_path, **common)
    training_loop(**second)

    a, a_state = final_snapshot(straight.run_dir)
    b, b_state = final_snapshot(second.run_dir)
    assert a_state['cur_nimg'] == b_state['cur_nimg'] == 96
    for name in ['G', 'D', 'G_ema', 'augment_pipe']:
        ta, tb = named_tensors(a[name]), named_tensors(b[name])
        assert list(ta) == list(tb)
        for tensor_name in ta:
            assert torch.equal(ta[tensor_name], tb[tensor_name]), f'{name}.{tensor_name}'
    assert float(a['augment_pipe'].p) != 0.25  # ADA really moved p
    for opt_name in ['G', 'D']:
        for key, value in a_state['optimizers'][opt_name]['state'].items():
            for moment in ['exp_avg', 'exp_avg_sq']:
                assert torch.equal(value[moment], b_state['optimizers'][opt_name]['state'][key][moment])
    assert torch.equal(a_state['loss']['pl_mean'], b_state['loss']['pl_mean']) and float(a_state['loss']['pl_mean']) > 0

def _straight_and_resumed(shapes_zip, tmp_path, cfg, edit=lambda c: c, cond=False, aug='noaug', batch=4, steps=4,
                          train_options=None):
    """(snapshot, state) of a straight run of `steps` steps, and the snapshot of the same run stopped halfway and resumed."""
    common = dict(cfg=cfg, batch=batch, batch_gpu=batch, cond=cond, aug=aug, train_options=train_options)
    straight = edit(tiny_options(shapes_zip, tmp_path / 'straight', kimg=steps * batch / 1000, **common))
    training_loop(**straight)
    first = edit(tiny_options(shapes_zip, tmp_path / 'first', kimg=steps // 2 * batch / 1000, **common))
    training_loop(**first)
    pkl, state_path = snapshots.resolve_resume(first.run_dir)
    second = edit(tiny_options(shapes_zip, tmp_path / 'second', kimg=steps * batch / 1000, resume_pkl=pkl,
                               resume_state=state_path, **common))
    training_loop(**second)
    a, a_state = final_snapshot(straight.run_dir)
    b, _ = final_snapshot(second.run_dir)
    return a, a_state, b

def test_resume_of_stylegan3_is_bit_identical(shapes_zip, tmp_path):
    # StyleGAN3 adds magnitude EMAs (buffers updated during training) and the D-input blur schedule.
    a, _, b = _straight_and_resumed(shapes_zip, tmp_path, cfg='stylegan3-t')
    for name in ['G', 'D', 'G_ema']:
        for tensor_name, tensor in named_tensors(a[name]).items():
            assert torch.equal(tensor, named_tensors(b[name])[tensor_name]), f'{name}.{tensor_name}'

def test_creps_trains_finite_and_resumes_bit_identically(shapes_zip, tmp_path):
    # --cfg=creps on the CPU: path-length regularisation every 4 G steps, the official w_avg rule
    # (updated by the G phases), float32 everywhere; a stop and resume continues exactly.
    c = tiny_options(shapes_zip, tmp_path / 'options', cfg='creps')
    assert c.G_kwargs.class_name == 'training.networks_creps.Generator' and c.G_reg_interval == 4
    a, a_state, b = _straight_and_resumed(shapes_zip, tmp_path, cfg='creps')
    for name in ['G', 'D', 'G_ema']:
        for tensor_name, tensor in named_tensors(a[name]).items():
            assert torch.isfinite(tensor).all(), f'{name}.{tensor_name}'
            assert torch.equal(tensor, named_tensors(b[name])[tensor_name]), f'{name}.{tensor_name}'
    assert a['G'].mapping.w_avg.abs().sum() > 0 and float(a_state['loss']['pl_mean']) > 0
    with torch.no_grad():
        img = a['G_ema'].eval()(torch.randn([2, a['G_ema'].z_dim]), None, scale=2)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()

def _tiny_eg3d(c):
    """A tiny tri-plane model: 16x16 planes, 8x8 neural rendering, 6 + 6 samples, a narrow super-resolution."""
    c.G_kwargs.triplane_resolution = 16
    c.G_kwargs.sr_kwargs.block_channels = [16, 16]
    c.G_kwargs.rendering_kwargs.update(depth_resolution=6, depth_resolution_importance=6)
    c.G_reg_interval = 2  # density regularisation in every other G step, so a 4-step run has it twice
    c.loss_kwargs.neural_rendering_resolution_initial = 8
    return c

def test_eg3d_trains_finite_writes_raw_and_depth_grids_and_resumes_bit_identically(shapes_zip, tmp_path):
    # --cfg=eg3d-shapenet on the CPU: dual discrimination, dual R1, D-input blur, density regularisation
    # (lazy, in Greg), image and raw image augmented jointly (--aug=fixed --p=0.5); snapshots carry the raw
    # and depth grids; a stop and resume continues exactly.
    c = _tiny_eg3d(tiny_options(shapes_zip, tmp_path / 'options', cfg='eg3d-shapenet', cond=True, aug='fixed'))
    assert c.loss_kwargs.class_name == 'training.loss.TriPlaneLoss' and c.D_kwargs.class_name.endswith('DualDiscriminator')
    assert c.augment_p == 0.5 and c.augment_kwargs.brightness == 1
    a, a_state, b = _straight_and_resumed(shapes_zip, tmp_path, cfg='eg3d-shapenet', edit=_tiny_eg3d, cond=True,
                                          aug='fixed')
    assert float(a['augment_pipe'].p) == 0.5
    for name in ['G', 'D', 'G_ema']:
        for tensor_name, tensor in named_tensors(a[name]).items():
            assert torch.isfinite(tensor).all(), f'{name}.{tensor_name}'
            assert torch.equal(tensor, named_tensors(b[name])[tensor_name]), f'{name}.{tensor_name}'
    files = sorted(os.listdir(tmp_path / 'straight'))
    for stem in ('fakes_init', 'fakes000000'):  # fakes<kimg>: a 16-image run ends at kimg 0
        assert {f'{stem}.png', f'{stem}_raw.png', f'{stem}_depth.png'} <= set(files), files
    raw = np.asarray(PIL.Image.open(tmp_path / 'straight' / 'fakes000000_raw.png'))
    assert raw.shape == (2 * 8, 2 * 8, 3)  # the 2x2 grid at the neural rendering resolution
    G = a['G_ema'].eval()
    assert G.neural_rendering_resolution == 8  # copied from G, which the loss renders at
    c_label = torch.from_numpy(np.stack([_label(shapes_zip, i) for i in range(2)]))
    with torch.no_grad():
        out = G(torch.randn([2, G.z_dim]), c_label)
    assert out['image'].shape == (2, 3, 16, 16) and out['image_depth'].shape == (2, 1, 8, 8)
    assert torch.isfinite(out['image']).all()

# A tiny EpiGRAF on the 16x16 shapes (cameras at radius 2.7, focal 4.2647): 16x16 tri-planes of 4 channels,
# 8x8 patches (so D has one stride-1 leading block), 6 + 6 samples per ray, camera-conditioned G and D.
TINY_EPIGRAF = dict(triplane_res=16, triplane_channels=4, patch_res=8, ray_steps=6, camera_cond_g=True,
                    camera_radius=2.7, camera_focal=4.2647, camera_mean_angles=[0.0, 1.5, 0.0])

def test_epigraf_trains_patches_finite_and_resumes_bit_identically(shapes_zip, tmp_path):
    # --cfg=epigraf on the CPU: fakes rendered as 8x8 patches of the 16x16 image at Beta-distributed scales,
    # real patches resampled from the images, R1 on them (lazy, every 16 D steps: the first step has it),
    # the D-input blur, the density noise, pose-conditioned G with spoofing, camera-conditioned D with
    # dropout, ADA; a stop and resume continues exactly.
    c = tiny_options(shapes_zip, tmp_path / 'options', cfg='epigraf', cond=True, aug='ada', train_options=TINY_EPIGRAF)
    assert c.loss_kwargs.class_name == 'training.loss.EpiGRAFLoss' and c.D_kwargs.cfg.num_additional_start_blocks == 1
    camera = c.G_kwargs.cfg.dataset.camera
    assert (camera.ray_start, camera.ray_end, camera.radius) == pytest.approx((0.88 * 2.7, 1.12 * 2.7, 2.7))
    assert c.G_kwargs.cfg.dataset.cube_scale == pytest.approx(0.2 * 2.7)
    a, a_state, b = _straight_and_resumed(shapes_zip, tmp_path, cfg='epigraf', cond=True, aug='ada', batch=4, steps=2,
                                          train_options=TINY_EPIGRAF)
    assert a_state['cur_nimg'] == 8
    for name in ['G', 'D', 'G_ema']:
        for tensor_name, tensor in named_tensors(a[name]).items():
            assert torch.isfinite(tensor).all(), f'{name}.{tensor_name}'
            assert torch.equal(tensor, named_tensors(b[name])[tensor_name]), f'{name}.{tensor_name}'
    G = a['G_ema'].eval()
    assert type(G).__name__ == 'Generator' and G.synthesis.tri_plane_decoder.out_resolution == 16
    assert G.mapping.mean_camera_pose.tolist() == pytest.approx([0.0, 1.5, 0.0])
    c_label = torch.from_numpy(np.stack([_label(shapes_zip, i) for i in range(2)]))
    with torch.no_grad():
        img = G(torch.randn([2, G.z_dim]), c_label)
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()  # scale 1: the whole image, at any resolution

@pytest.mark.parametrize('bg_model', ['plane', 'sphere'])
def test_epigraf_trains_with_a_background_model(shapes_zip, tmp_path, bg_model):
    c = tiny_options(shapes_zip, tmp_path / 'run', cfg='epigraf', cond=True, batch=4, batch_gpu=4, kimg=0.004,
                     train_options=dict(TINY_EPIGRAF, bg_model=bg_model))
    assert c.G_kwargs.cfg.bg_model['type'] == bg_model
    assert training_loop(**c).status == 'done'
    data, _ = final_snapshot(c.run_dir)
    assert data['G'].synthesis.plane_background == (bg_model == 'plane')
    assert (data['G'].synthesis.bg_model is not None) == (bg_model == 'sphere')
    for name, tensor in named_tensors(data['G']).items():
        assert torch.isfinite(tensor).all(), name

def _tiny_gram(c):
    """A tiny GRAM: 32-wide radiance network, 16-wide manifold predictor, 16 samples per ray, 8 manifolds."""
    c.G_kwargs.representation_kwargs.update(hidden_dim=32, hidden_dim_sample=16)
    c.G_kwargs.renderer_kwargs.update(num_samples=16, num_manifolds=8)  # levels 23 -> 8 over 7 surfaces + background
    return c

@pytest.fixture(scope='module')
def shapes8_zip(tmp_path_factory):
    """16 camera-labelled 8x8 images: GRAM's discriminator is 400 channels wide below 64x64 (no width option), so
    16x16 images cost seconds per step on two CPU cores; at 8x8 a step takes about half a second."""
    path = str(tmp_path_factory.mktemp('data8') / 'shapes8.zip')
    result = CliRunner().invoke(dataset_tool.main, ['--source=synthetic:shapes', f'--dest={path}', '--resolution=8x8',
                                                    '--max-images=16', '--seed=1'])
    assert result.exit_code == 0, result.output
    return path

@pytest.mark.parametrize('cfg', ['gram-carla'])  # the config with the most recipe (gram-ffhq: ~20 s more)
def test_gram_trains_finite_and_resumes_bit_identically(shapes8_zip, tmp_path, cfg):
    # --cfg=gram-* on the CPU: fakes from G's pose prior, pose regression, R1 in every D step, gradient
    # clipping, torch_ema's EMA warm-up (CARLA: the manifold predictor's own learning rate); a stop and
    # resume continues exactly (stopped after step 1 of 2, so the resumed EMA warm-up must count on from 1).
    # Batch 2 at 8x8 keeps it to a few seconds.
    def tiny(c):
        c.training_set_kwargs.update(resolution=8, max_size=16)
        c.G_kwargs.img_size = c.D_kwargs.img_size = 8
        return _tiny_gram(c)
    c = tiny(tiny_options(shapes8_zip, tmp_path / 'options', cfg=cfg, cond=True))
    assert c.loss_kwargs.class_name == 'training.loss.GramLoss' and c.D_reg_interval is None and c.ema_warmup
    a, a_state, b = _straight_and_resumed(shapes8_zip, tmp_path, cfg=cfg, edit=tiny, cond=True, batch=2, steps=2)
    assert a_state['cur_nimg'] == 4 and a_state['batch_idx'] == 2
    for name in ['G', 'D', 'G_ema']:
        for tensor_name, tensor in named_tensors(a[name]).items():
            assert torch.isfinite(tensor).all(), f'{name}.{tensor_name}'
            assert torch.equal(tensor, named_tensors(b[name])[tensor_name]), f'{name}.{tensor_name}'
    groups = a_state['optimizers']['G']['param_groups']
    if cfg == 'gram-carla':
        assert [group['lr'] for group in groups] == [2e-6, 2e-5]
        assert len(groups[0]['params']) == len(list(a['G'].representation.sample_network.parameters()))
    else:
        assert [group['lr'] for group in groups] == [2e-5]
    G = a['G_ema'].eval()
    assert type(G).__name__ == 'GramGenerator' and G.z_dim == 16
    labels, _ = G.sample_labels(2)
    with torch.no_grad():
        img = G(torch.randn([2, G.z_dim]), labels)
    assert img.shape == (2, 3, 8, 8) and torch.isfinite(img).all()

def test_gram_amp_trains_under_autocast_and_resumes_with_its_loss_scale(shapes8_zip, tmp_path, monkeypatch):
    # GRAM's recipe has amp=True, which takes effect on CUDA; the CPU here runs the same path with bfloat16
    # autocast. The forwards run in bfloat16 (a float32 run ends elsewhere), the scaler's state is saved
    # and restored, and a stop and resume continues exactly.
    from training import mixed_precision
    def tiny(c):
        c.training_set_kwargs.update(resolution=8, max_size=16)
        c.G_kwargs.img_size = c.D_kwargs.img_size = 8
        return _tiny_gram(c)
    assert tiny(tiny_options(shapes8_zip, tmp_path / 'options', cfg='gram-ffhq', cond=True)).amp is True
    float32, _, _ = _straight_and_resumed(shapes8_zip, tmp_path / 'fp32', cfg='gram-ffhq', edit=tiny, cond=True,
                                          batch=2, steps=2)
    monkeypatch.setitem(mixed_precision.AMP_DTYPES, 'cpu', torch.bfloat16)
    a, a_state, b = _straight_and_resumed(shapes8_zip, tmp_path / 'amp', cfg='gram-ffhq', edit=tiny, cond=True,
                                          batch=2, steps=2)
    assert a_state['amp']['scale'] == 2.0 ** 16 and a_state['amp']['_growth_tracker'] == 2
    for name in ['G', 'D', 'G_ema']:
        for tensor_name, tensor in named_tensors(a[name]).items():
            assert torch.isfinite(tensor).all(), f'{name}.{tensor_name}'
            assert torch.equal(tensor, named_tensors(b[name])[tensor_name]), f'{name}.{tensor_name}'
    differ = [n for n, t in named_tensors(a['G']).items() if not torch.equal(t, named_tensors(float32['G'])[n])]
    assert len(differ) > 10

def _label(zip_path, index):
    from training.dataset import ImageFolderDataset
    dataset = ImageFolderDataset(path=zip_path, use_labels=True)
    try:
        return dataset.get_label(index)
    finally:
        dataset.close()

def test_two_gloo_processes_equal_one_process(shapes_zip, tmp_path):
    """Same total batch (8) in chunks of 4: one process accumulates 2 chunks, two processes take one each.

    Chunks hold the same images, latents and random draws (noise, style mixing, augmentation) in
    both layouts, so the gradients differ only in float32 summation order ((a + b) / 2 versus
    a / 2 + b / 2, and the all-reduce). Adam divides each gradient by its own running magnitude, which
    turns the rounding of nearly cancelling gradients into visible but tiny parameter differences:
    measured |one - two| / |one - init| = 3e-4 for G and 7e-6 for D after 8 steps, while any real
    difference in what is computed (other images, latents or draws) moves parameters by as much as
    training does (ratio ~1). The tolerance 1e-2 sits between the two.

    Excluded on purpose: path-length regularisation, whose running mean `pl_mean` is updated per
    chunk inside each process (as in the official loop), and the buffer `mapping.w_avg` (same
    reason; it only matters for truncation, which training does not use).
    """
    runs = []
    for procs in (1, 2):
        c = tiny_options(shapes_zip, tmp_path / f'procs{procs}', gpus=procs, aug='fixed', kimg=0.064)
        c.loss_kwargs.pl_weight = 0
        assert c.loss_kwargs.style_mixing_prob == 0.9  # mixing, noise and augmentation stay on
        with open(os.path.join(c.run_dir, 'options.json'), 'w') as f:
            json.dump(c, f)
        runs.append(c)
    results = run_processes([[sys.executable, os.path.join('tests', 'training', 'loop_runner.py'), str(procs),
                              os.path.join(c.run_dir, 'options.json')] for procs, c in zip((1, 2), runs)], timeout=300)
    for returncode, out, err in results:
        assert returncode == 0, err[-3000:]
        assert '"status": "done"' in out

    one, _ = final_snapshot(runs[0].run_dir)
    two, _ = final_snapshot(runs[1].run_dir)
    torch.manual_seed(0)  # the loop builds its networks from this seed
    shape = dict(c_dim=0, img_resolution=16, img_channels=3)
    init = dict(G=dnnlib.util.construct_class_by_name(**runs[0].G_kwargs, **shape),
                D=dnnlib.util.construct_class_by_name(**runs[0].D_kwargs, **shape))
    for name, init_name in [('G', 'G'), ('D', 'D'), ('G_ema', 'G')]:
        p_one, p_two = dict(one[name].named_parameters()), dict(two[name].named_parameters())
        p_init = dict(init[init_name].named_parameters())
        apart = sum(((p_one[n] - p_two[n]) ** 2).sum() for n in p_one).sqrt()
        moved = sum(((p_one[n] - p_init[n]) ** 2).sum() for n in p_one).sqrt()
        assert moved > 0.1, name
        assert apart / moved < 1e-2, f'{name}: {apart / moved:.2e}'
    assert float(one['augment_pipe'].p) == float(two['augment_pipe'].p) == 0.5

#----------------------------------------------------------------------------
# Loop logic checked with stub losses whose statistics are known exactly.

class ConstantSignLoss:
    """Reports a fixed sign of D(real) for every image (no gradients): drives ADA deterministically."""
    sign = 1.0

    def __init__(self, device, G, D, augment_pipe=None, **kwargs):
        pass

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if phase == 'Dmain':
            training_stats.report('Loss/signs/real', torch.full([real_img.shape[0]], self.sign))

    def nonfinite_terms(self):
        return []

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

class OverfittingLoss(ConstantSignLoss):
    sign = 1.0

class UnderfittingLoss(ConstantSignLoss):
    sign = -1.0

@pytest.mark.parametrize('loss_class, start_p', [(OverfittingLoss, 0.0), (UnderfittingLoss, 0.01)])
def test_ada_p_follows_the_overfitting_signal(shapes_zip, tmp_path, loss_class, start_p):
    # 16 steps of batch 8, adjustment every 4 steps by batch * 4 / (ada_kimg * 1000) = 32 / 5000.
    c = tiny_options(shapes_zip, tmp_path / 'run', aug='ada', kimg=0.128, augment_p=start_p, ada_kimg=5,
                     loss_kwargs=dict(class_name=f'{__name__}.{loss_class.__name__}'))
    training_loop(**c)
    data, _ = final_snapshot(c.run_dir)
    step = 32 / 5000
    expected = start_p + 4 * step if loss_class.sign > 0 else max(start_p - 4 * step, 0)
    assert float(data['augment_pipe'].p) == pytest.approx(expected, abs=1e-7)
    if loss_class.sign < 0:
        assert float(data['augment_pipe'].p) == 0  # clamped, never negative

class PoisonedRealLoss(StyleGAN2Loss):
    """The real StyleGAN2 loss plus an extra D term on reals that is NaN."""

    def extra_D_terms(self, stage, ctx):
        return {'poison': torch.full([ctx.real_img.shape[0]], float('nan'))} if stage == 'real' else {}

def test_nonfinite_loss_stops_the_run_naming_phase_and_tick(shapes_zip, tmp_path):
    c = tiny_options(shapes_zip, tmp_path / 'run')
    c.loss_kwargs.class_name = f'{__name__}.PoisonedRealLoss'
    with pytest.raises(NonFiniteLossError, match=r'\(Dmain/poison, as phase/loss\) appeared during tick 0'):
        training_loop(**c)
    assert not any(name.startswith('network-snapshot') for name in os.listdir(c.run_dir))

class LinearLoss(ConstantSignLoss):
    """loss = sum over the trained network's parameters p of <W_p, p>: every step's gradient is the fixed W."""

    def __init__(self, device, G, D, augment_pipe=None, **kwargs):
        self.G, self.D = G, D

    @staticmethod
    def weights(module):
        gen = torch.Generator().manual_seed(0)
        return {name: torch.randn(p.shape, generator=gen) for name, p in module.named_parameters()}

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        module = self.G if phase.startswith('G') else self.D
        weights = self.weights(module)
        (sum((weights[name] * p).sum() for name, p in module.named_parameters()) * gain).backward()

def _linear_run(shapes_zip, tmp_path, steps=1, **overrides):
    """A stylegan2 run of `steps` steps (batch 8 in 2 chunks) with LinearLoss and SGD; -> (init G, init D, snapshot, state)."""
    options = dict(G_reg_interval=None, D_reg_interval=None, loss_kwargs=dict(class_name=f'{__name__}.LinearLoss'),
                   G_opt_kwargs=dict(class_name='torch.optim.SGD', lr=1.0),
                   D_opt_kwargs=dict(class_name='torch.optim.SGD', lr=1.0))
    c = tiny_options(shapes_zip, tmp_path / 'run', kimg=0.008 * steps, **dict(options, **overrides))
    torch.manual_seed(0)  # the loop builds its networks from this seed
    shape = dict(c_dim=0, img_resolution=16, img_channels=3)
    G0 = dnnlib.util.construct_class_by_name(**c.G_kwargs, **shape)
    D0 = dnnlib.util.construct_class_by_name(**c.D_kwargs, **shape)
    training_loop(**c)
    data, state = final_snapshot(c.run_dir)
    return G0, D0, data, state

def test_grad_clip_clips_the_accumulated_gradient_like_clip_grad_norm(shapes_zip, tmp_path):
    # Two chunks of 4 give W / 2 each: clipping each chunk would give 2 clip(W / 2) = 2 clip(W); the loop clips their sum.
    G0, D0, data, _ = _linear_run(shapes_zip, tmp_path, grad_clip=dict(G=0.5))
    params = [p for p in G0.parameters()]
    for p, (name, w) in zip(params, LinearLoss.weights(G0).items()):
        p.grad = w.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, 0.5)
    assert norm > 1  # really clipped
    G1 = dict(data['G'].named_parameters())
    for name, p in G0.named_parameters():
        torch.testing.assert_close(G1[name], p.detach() - p.grad, rtol=1e-6, atol=1e-6)
    D1, W = dict(data['D'].named_parameters()), LinearLoss.weights(D0)
    for name, p in D0.named_parameters():  # D unclipped: its full gradient
        torch.testing.assert_close(D1[name], p.detach() - W[name], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match='grad_clip'):
        training_loop(**tiny_options(shapes_zip, tmp_path / 'bad', grad_clip=dict(G=0)))

def test_param_groups_give_named_submodules_their_own_settings(shapes_zip, tmp_path):
    G0, _, data, state = _linear_run(shapes_zip, tmp_path, G_opt_kwargs=dict(
        class_name='torch.optim.SGD', lr=1.0, param_groups=[dict(prefix='mapping', lr=0.0)]))
    G1, W = dict(data['G'].named_parameters()), LinearLoss.weights(G0)
    for name, p in G0.named_parameters():
        expected = p.detach() if name.startswith('mapping.') else p.detach() - W[name]
        torch.testing.assert_close(G1[name], expected, rtol=1e-6, atol=1e-6)
    groups = state['optimizers']['G']['param_groups']
    assert [group['lr'] for group in groups] == [0.0, 1.0]
    assert len(groups[0]['params']) == len([n for n, _ in G0.named_parameters() if n.startswith('mapping.')])
    # Lazy regularisation scales every group's learning rate (and betas) like the optimizer's own.
    c = tiny_options(shapes_zip, tmp_path / 'lazy', kimg=0.008)
    c.G_opt_kwargs.param_groups = [dict(prefix='mapping', lr=0.001, betas=[0.0, 0.9])]
    training_loop(**c)
    _, lazy_state = final_snapshot(c.run_dir)
    lazy = lazy_state['optimizers']['G']['param_groups']
    assert [group['lr'] for group in lazy] == pytest.approx([0.001 * 0.8, 0.002 * 0.8])
    assert lazy[0]['betas'] == pytest.approx((0.0, 0.9 ** 0.8)) and lazy[1]['betas'] == pytest.approx((0.0, 0.99 ** 0.8))
    with pytest.raises(ValueError, match='"nosuch" names no parameter'):
        training_loop(**tiny_options(shapes_zip, tmp_path / 'bad', G_opt_kwargs=dict(
            class_name='torch.optim.SGD', lr=1.0, param_groups=[dict(prefix='nosuch', lr=0.0)])))

def test_ema_warmup_is_torch_emas_num_updates_rule(shapes_zip, tmp_path):
    # GRAM's EMA: torch_ema with decay 0.999, whose n-th update uses min(0.999, (1 + n) / (10 + n)). Through
    # ema_kimg, 0.5 ** (batch / ema_nimg) = 0.999; SGD on a constant gradient makes p_t = p_0 - 0.1 t W.
    batch, steps = 8, 3
    G0, _, data, _ = _linear_run(shapes_zip, tmp_path, steps=steps, ema_kimg=batch * np.log(0.5) / np.log(0.999) / 1000,
                                 ema_rampup=None, ema_warmup=True,
                                 G_opt_kwargs=dict(class_name='torch.optim.SGD', lr=0.1))
    W = LinearLoss.weights(G0)
    G_ema = dict(data['G_ema'].named_parameters())
    for name, p in G0.named_parameters():
        p0, w = p.detach().double(), W[name].double()
        ema = p0.clone()
        for n in range(1, steps + 1):
            beta = min(0.999, (1 + n) / (10 + n))
            ema = beta * ema + (1 - beta) * (p0 - 0.1 * n * w)
        torch.testing.assert_close(G_ema[name].double(), ema, rtol=1e-5, atol=1e-6)
    assert min(0.999, 2 / 11) < 0.999  # the warm-up really changes the first updates

#----------------------------------------------------------------------------
# Data order and resume sources.

class _Sized:
    def __len__(self):
        return 10

def test_batch_slices_tile_the_global_stream():
    stream = misc.InfiniteSampler(_Sized(), seed=3)
    expected = [index for index, _ in zip(stream, range(5 * 8))]
    for start in (0, 16):
        parts = []
        for rank in range(4):
            sampler = BatchSliceSampler(_Sized(), batch_size=8, rank=rank, num_replicas=4, seed=3, start_index=start)
            parts.append([index for index, _ in zip(sampler, range((40 - start) // 4))])
        # Global batch k = rank 0's 2 images, then rank 1's, ... (contiguous slices).
        rebuilt = [parts[rank][2 * k + i] for k in range((40 - start) // 8) for rank in range(4) for i in range(2)]
        assert rebuilt == expected[start:]

def test_resolve_resume_prefers_the_latest_snapshot_with_state(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    # Same-kimg snapshots are numbered -1, -2, ... in order: -10 is later than -2 (not by string order).
    for name, has_state in [('network-snapshot-000000.pkl', True), ('network-snapshot-000000-2.pkl', True),
                            ('network-snapshot-000000-10.pkl', True), ('network-snapshot-000001.pkl', False)]:
        (run / name).write_bytes(b'x')
        if has_state:
            snapshots.save_training_state(snapshots.state_path_for(str(run / name)), dict(cur_nimg=0))
    assert snapshots.resolve_resume(str(run)) == (str(run / 'network-snapshot-000000-10.pkl'),
                                                  str(run / 'training-state-000000-10.pt'))
    assert snapshots.resolve_resume(str(run / 'network-snapshot-000001.pkl')) == (str(run / 'network-snapshot-000001.pkl'), None)
    with pytest.raises(snapshots.ResumeError, match='holds no network-snapshot'):
        snapshots.resolve_resume(str(tmp_path))
    with pytest.raises(snapshots.ResumeError, match='neither a snapshot file nor a run directory'):
        snapshots.resolve_resume(str(tmp_path / 'missing.pkl'))

def test_training_state_refuses_foreign_files(tmp_path):
    path = tmp_path / 'training-state-000000.pt'
    torch.save({'hello': 1}, path)
    with pytest.raises(snapshots.ResumeError, match='not a training state'):
        snapshots.load_training_state(str(path))
    path.write_bytes(pickle.dumps(object()))
    with pytest.raises(snapshots.ResumeError, match='Cannot read the training state'):
        snapshots.load_training_state(str(path))

def test_weights_only_resume_copies_by_name_and_lists_every_mismatch(shapes_zip, tmp_path):
    from training import networks_stylegan2
    small = dict(z_dim=32, w_dim=32, c_dim=0, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2))
    src = networks_stylegan2.Generator(channel_base=256, channel_max=32, **small)
    dst = networks_stylegan2.Generator(channel_base=256, channel_max=32, **small)
    snapshots.copy_weights_by_name(dict(G=src), dict(G=dst), 'src.pkl')
    for name, tensor in named_tensors(src).items():
        assert torch.equal(tensor, named_tensors(dst)[name])

    wider = networks_stylegan2.Generator(channel_base=512, channel_max=64, **small)
    before = {name: tensor.clone() for name, tensor in named_tensors(dst).items()}
    expected = [name for name, tensor in named_tensors(wider).items() if tensor.shape != named_tensors(dst)[name].shape]
    with pytest.raises(snapshots.ResumeError) as error:
        snapshots.copy_weights_by_name(dict(G=wider), dict(G=dst), 'wider.pkl')
    message = str(error.value)
    assert f'{len(expected)} tensor(s)' in message and '\n' not in message
    for name in expected:
        assert f'G.{name} ' in message
    for name, tensor in named_tensors(dst).items():
        assert torch.equal(tensor, before[name]), 'nothing may be copied when shapes mismatch'

#----------------------------------------------------------------------------
# Preemption through the real command line.

def test_sigterm_writes_a_snapshot_that_resumes(shapes_zip, tmp_path):
    outdir = tmp_path / 'runs'
    common = ['--cfg=stylegan2', f'--data={shapes_zip}', '--gpus=1', '--batch=4', '--gamma=1', '--device=cpu',
              '--metrics=none', '--cbase=256', '--cmax=16', '--map-depth=2', '--workers=0', '--grid=2x2', '--tick=0.004']
    proc = subprocess.Popen([sys.executable, 'train.py', f'--outdir={outdir}', '--kimg=1000', *common], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        seen = []
        while time.time() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if line.startswith('tick 2 '):
                break
        else:
            pytest.fail('training did not reach tick 2:\n' + ''.join(seen))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert 'Traceback' not in out
    run_dir = os.path.join(outdir, os.listdir(outdir)[0])
    assert f'--resume={run_dir}' in out
    pkl, state_path = snapshots.resolve_resume(run_dir)
    stopped_at = snapshots.load_training_state(state_path)['cur_nimg']
    assert stopped_at >= 12  # at least the three ticks seen

    resumed = subprocess.run([sys.executable, 'train.py', f'--outdir={outdir}', f'--resume={run_dir}',
                              f'--kimg={(stopped_at + 8) / 1000}'], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert 'exact continuation' in resumed.stdout
    second_dir = sorted(os.listdir(outdir))[1]
    assert second_dir.startswith('00001-stylegan2-shapes16-gpus1-batch4-gamma1')
    _, state = final_snapshot(os.path.join(outdir, second_dir))
    assert state['cur_nimg'] == stopped_at + 8

#----------------------------------------------------------------------------
