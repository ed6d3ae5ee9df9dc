"""Every `--cfg` recipe of train.py, key by key, against the official train.py.

For each registered config, `train.py --dry-run` on the official README's command line, and on
variants of it that exercise the options, must print the training-loop arguments that the official
train.py builds from the same command line: NVlabs/stylegan3 for stylegan2 / stylegan3-t /
stylegan3-r, echen01/ray-conditioning (StyleGAN3's train.py plus the raycond configs) for
raycond2 / raycond3-t / raycond3-r, VinAIResearch/CREPS (StyleGAN3's train.py plus the creps
config) for creps, and NVlabs/eg3d (its own train.py, --cfg=ffhq|afhq|shapenet) for eg3d-ffhq /
eg3d-afhq / eg3d-shapenet. microsoft/GRAM has no StyleGAN train.py: for gram-ffhq / gram-cats /
gram-carla the official dict is the training_loop arguments that express its recipe (configs.py
FFHQ_default / CATS_default / CARLA_default, processes.py Gan3DProcess, training_loop.py), written by
hand from those files. Every key of the official dict must be printed with an equal
value; every extra key, missing key or other value must be an entry of DELIBERATE_DIFFERENCES,
and every entry there that applies to a command line must still be a difference of it.

The expected values are data, written out below with the line of the official train.py they
come from. Only dry runs: each takes a few milliseconds.
"""

import collections
import copy
import math
import os
import sys

import pytest
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import dataset_tool  # noqa: E402
import tiny_networks  # noqa: E402
import train  # noqa: E402
from test_train_cli import _in_process_calls_never_train, dry_run  # noqa: E402,F401 (autouse fixture: never trains)
from training import configs, snapshots  # noqa: E402

# ----------------------------------------------------------------------------------------------
# The command lines.

DATA = '<--data>'          # replaced by the path of the dataset made below
DATA_SIZE = 16             # images in that dataset (dataset_tool.py --max-images=16)
DATA_RESOLUTION = 16       # ... and their resolution (--resolution=16x16); its labels are 25-float cameras

# NVlabs/stylegan3 README.md, "Train StyleGAN2 for FFHQ at 1024x1024 resolution using 8 GPUs" (its
# --aug=noaug is a variant below). The raycond configs need camera labels: --cond=1 (as every
# launch script of echen01/ray-conditioning passes), and no --mirror (ours refuses to mirror
# camera-labelled images without --mirror-cameras=1; a variant below passes both).
_STYLEGAN_COMMAND = ['--gpus=8', '--batch=32', '--gamma=10', '--mirror=1']
_RAYCOND_COMMAND = ['--gpus=8', '--batch=32', '--gamma=10', '--cond=1']
_EG3D_SR = ['--sr-module=training.superresolution.SuperresolutionHybrid2X']
COMMAND_LINES = {
    'stylegan2': ['--cfg=stylegan2', *_STYLEGAN_COMMAND],
    'stylegan3-t': ['--cfg=stylegan3-t', *_STYLEGAN_COMMAND],
    'stylegan3-r': ['--cfg=stylegan3-r', *_STYLEGAN_COMMAND],
    'raycond2': ['--cfg=raycond2', *_RAYCOND_COMMAND],
    'raycond3-t': ['--cfg=raycond3-t', *_RAYCOND_COMMAND],
    'raycond3-r': ['--cfg=raycond3-r', *_RAYCOND_COMMAND],
    # VinAIResearch/CREPS train.py --help, "Train CREPS for FFHQ at 1024x1024 resolution using 8 GPUs" (its
    # --aug=noaug is a variant below).
    'creps': ['--cfg=creps', *_STYLEGAN_COMMAND],
    # NVlabs/eg3d docs/models.md: ffhq512-64 "--cfg=ffhq --gpus=8 --batch=32 --gamma=1 --gen_pose_cond=True";
    # afhqcats512-128 "--cfg=afhq ... --gamma=5 --aug=ada --gpc_reg_prob=0.8 --neural_rendering_resolution_final=128"
    # (its --resume is the variant eg3d-resume); shapenetcars128-64
    # "--cfg=shapenet --gamma=0.3". The 16x16 test dataset has no official super-resolution module, so each
    # names EG3D's 2X with --sr-module (which the official train.py takes as given).
    'eg3d-ffhq': ['--cfg=eg3d-ffhq', '--gpus=8', '--batch=32', '--gamma=1', '--gen_pose_cond=True', *_EG3D_SR],
    'eg3d-afhq': ['--cfg=eg3d-afhq', '--gpus=8', '--batch=32', '--gamma=5', '--aug=ada', '--gen_pose_cond=True',
                  '--gpc_reg_prob=0.8', '--neural_rendering_resolution_final=128', *_EG3D_SR],
    'eg3d-shapenet': ['--cfg=eg3d-shapenet', '--gpus=8', '--batch=32', '--gamma=0.3', *_EG3D_SR],
    # microsoft/GRAM README: "python train.py --config FFHQ_default ..." on 8 GPUs. configs.py: "'batch_size': 4,
    # # batchsize per GPU ... 4*8=32" with "'batch_split': 4" (G renders chunks of 1) -> --batch=32 --batch-gpu=1;
    # "'r1_lambda': 1." -> --gamma=1; datasets.py flips each image with "flip = (torch.rand(1) < 0.5)" and mirrors
    # its pose -> --mirror=1 --mirror-cameras=1. Camera labels: --cond defaults to True for gram.
    'gram-ffhq': ['--cfg=gram-ffhq', '--gpus=8', '--batch=32', '--batch-gpu=1', '--gamma=1', '--mirror=1',
                  '--mirror-cameras=1'],
    # CATS_default: "'batch_size': 2", "'batch_split': 2" -> 16 images in chunks of 1.
    'gram-cats': ['--cfg=gram-cats', '--gpus=8', '--batch=16', '--batch-gpu=1', '--gamma=1', '--mirror=1',
                  '--mirror-cameras=1'],
    # CARLA_default: "'batch_size': 4", "'batch_split': 4".
    'gram-carla': ['--cfg=gram-carla', '--gpus=8', '--batch=32', '--batch-gpu=1', '--gamma=1', '--mirror=1',
                   '--mirror-cameras=1'],
    # universome/epigraf README: "python src/infra/launch.py hydra.run.dir=. desc=<EXPERIMENT_NAME>
    # dataset=<DATASET_NAME> dataset.resolution=<DATASET_RESOLUTION> training.gamma=0.1 training.resume=null"
    # with configs/infra num_gpus 4 and training.batch_size 64; training.mirror is true (the pose flipped with
    # the image). The 16x16 test data take 8x8 patches: training.patch.resolution=8 -> --patch-res=8.
    'epigraf': ['--cfg=epigraf', '--gpus=4', '--batch=64', '--gamma=0.1', '--mirror=1', '--mirror-cameras=1',
                '--patch-res=8'],
}
OUR_EXTRA_ARGS = ['--device=cpu']  # ours only; the official train.py always trains on CUDA

STYLEGAN_CONFIGS = ('stylegan2', 'stylegan3-t', 'stylegan3-r')
RAYCOND_CONFIGS = ('raycond2', 'raycond3-t', 'raycond3-r')
SG3_CONFIGS = ('stylegan3-t', 'stylegan3-r', 'raycond3-t', 'raycond3-r')
R_CONFIGS = ('stylegan3-r', 'raycond3-r')
TWO_D_CONFIGS = STYLEGAN_CONFIGS + ('creps',)
EG3D_CONFIGS = ('eg3d-ffhq', 'eg3d-afhq', 'eg3d-shapenet')
NON_EG3D = STYLEGAN_CONFIGS + RAYCOND_CONFIGS + ('creps',)
GRAM_CONFIGS = ('gram-ffhq', 'gram-cats', 'gram-carla')
EPIGRAF_CONFIGS = ('epigraf',)
STYLEGAN_D_CONFIGS = NON_EG3D + EG3D_CONFIGS  # the configs whose D has the StyleGAN options (--freezed, --mbstd-group)

# ----------------------------------------------------------------------------------------------
# What the official train.py prints (`c`, less the launcher's run_dir) for those command lines.

ABSENT = type('Absent', (), {'__repr__': lambda self: '<absent>'})()  # a key that is not set
ANY = type('Any', (), {'__repr__': lambda self: '<any value>'})()     # in DELIBERATE_DIFFERENCES: not pinned

# NVlabs/stylegan3 train.py, augpipe 'bgc' (its only pipeline); echen01/ray-conditioning train.py
# spells the same twelve multipliers out: "if opts.aug != 'noaug': c.augment_kwargs = ...".
_BGC = dict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1,
            xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
_GEOMETRIC_AUGMENTATIONS = ('xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac')


def _merged(base, update):
    """A deep copy of `base` with the nested dict `update` merged in."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _official(cfg_part, use_labels, xflip):
    """The keys both official train.py files set alike for every config, updated by `cfg_part`."""
    common = {
        # "c.G_kwargs = dnnlib.EasyDict(class_name=None, z_dim=512, w_dim=512, mapping_kwargs=...)";
        # "c.G_kwargs.channel_base = c.D_kwargs.channel_base = opts.cbase" (--cbase default 32768), cmax 512.
        'G_kwargs': dict(z_dim=512, w_dim=512, mapping_kwargs={}, channel_base=32768, channel_max=512),
        # "c.D_kwargs = dnnlib.EasyDict(class_name='training.networks_stylegan2.Discriminator', ...)";
        # freeze_layers = opts.freezed (0), mbstd_group_size = opts.mbstd_group (4); D is never doubled.
        'D_kwargs': dict(class_name='training.networks_stylegan2.Discriminator', block_kwargs=dict(freeze_layers=0),
                         mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4), channel_base=32768,
                         channel_max=512),
        # "c.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0,0.99], eps=1e-8)"; D alike,
        # "c.D_opt_kwargs.lr = opts.dlr" (--dlr default 0.002).
        'G_opt_kwargs': dict(class_name='torch.optim.Adam', betas=[0, 0.99], eps=1e-8),
        'D_opt_kwargs': dict(class_name='torch.optim.Adam', betas=[0, 0.99], eps=1e-8, lr=0.002),
        # "c.loss_kwargs.r1_gamma = opts.gamma".
        'loss_kwargs': dict(r1_gamma=10),
        # "c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, prefetch_factor=2)"; num_workers = --workers (3).
        'data_loader_kwargs': dict(pin_memory=True, prefetch_factor=2, num_workers=3),
        # init_dataset_kwargs(): class_name, path, resolution, max_size=len(dataset); then use_labels = opts.cond,
        # xflip = opts.mirror, "c.random_seed = c.training_set_kwargs.random_seed = opts.seed" (0).
        'training_set_kwargs': dict(class_name='training.dataset.ImageFolderDataset', path=DATA, use_labels=use_labels,
                                    max_size=DATA_SIZE, xflip=xflip, resolution=DATA_RESOLUTION, random_seed=0),
        # "c.num_gpus = opts.gpus", "c.batch_size = opts.batch",
        # "c.batch_gpu = opts.batch_gpu or opts.batch // opts.gpus".
        'num_gpus': 8, 'batch_size': 32, 'batch_gpu': 4,
        # --metrics default 'fid50k_full', --kimg 25000, --tick 4, --seed 0.
        'metrics': ['fid50k_full'], 'total_kimg': 25000, 'kimg_per_tick': 4, 'random_seed': 0,
        # "c.ema_kimg = c.batch_size * 10 / 32".
        'ema_kimg': 10.0,
        # --aug default 'ada': "c.augment_kwargs = ..." and "c.ada_target = opts.target" (--target default 0.6).
        'augment_kwargs': dict(_BGC), 'ada_target': 0.6,
    }
    return _merged(common, cfg_part)


OFFICIAL = {
    # NVlabs/stylegan3 train.py: "if opts.cfg == 'stylegan2':" branch; map_depth 8 and glr 0.002 for stylegan2;
    # --snap default 50: "c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap".
    'stylegan2': _official({
        'G_kwargs': dict(class_name='training.networks_stylegan2.Generator', mapping_kwargs=dict(num_layers=8),
                         fused_modconv_default='inference_only'),
        'G_opt_kwargs': dict(lr=0.002),
        'loss_kwargs': dict(class_name='training.loss.StyleGAN2Loss', style_mixing_prob=0.9, pl_weight=2,
                            pl_no_weight_grad=True),
        'G_reg_interval': 4,
        'image_snapshot_ticks': 50, 'network_snapshot_ticks': 50,
    }, use_labels=False, xflip=True),
    # NVlabs/stylegan3 train.py: the "else:" branch (not stylegan3-r); map_depth 2, glr 0.0025; --snap default 50.
    'stylegan3-t': _official({
        'G_kwargs': dict(class_name='training.networks_stylegan3.Generator', mapping_kwargs=dict(num_layers=2),
                         magnitude_ema_beta=0.5 ** (32 / 20000)),
        'G_opt_kwargs': dict(lr=0.0025),
        'loss_kwargs': dict(class_name='training.loss.StyleGAN2Loss'),
        'image_snapshot_ticks': 50, 'network_snapshot_ticks': 50,
    }, use_labels=False, xflip=True),
    # NVlabs/stylegan3 train.py: the "else:" branch and its "if opts.cfg == 'stylegan3-r':" part (1x1 convs,
    # doubled G channels, radial filters, D-input blur); map_depth 2, glr 0.0025; --snap default 50.
    'stylegan3-r': _official({
        'G_kwargs': dict(class_name='training.networks_stylegan3.Generator', mapping_kwargs=dict(num_layers=2),
                         magnitude_ema_beta=0.5 ** (32 / 20000), conv_kernel=1, channel_base=65536, channel_max=1024,
                         use_radial_filters=True),
        'G_opt_kwargs': dict(lr=0.0025),
        'loss_kwargs': dict(class_name='training.loss.StyleGAN2Loss', blur_init_sigma=10, blur_fade_kimg=200.0),
        'image_snapshot_ticks': 50, 'network_snapshot_ticks': 50,
    }, use_labels=False, xflip=True),
    # echen01/ray-conditioning train.py: "elif opts.cfg == 'raycond2':" branch (the stylegan2 one with the
    # raycond2 generator); loss class "training.ray_loss.StyleGAN2Loss" for every raycond config; map_depth 8
    # and glr 0.002 for raycond2; --snap default 100.
    'raycond2': _official({
        'G_kwargs': dict(class_name='training.networks_raycond2.Generator', mapping_kwargs=dict(num_layers=8),
                         fused_modconv_default='inference_only'),
        'G_opt_kwargs': dict(lr=0.002),
        'loss_kwargs': dict(class_name='training.ray_loss.StyleGAN2Loss', style_mixing_prob=0.9, pl_weight=2,
                            pl_no_weight_grad=True),
        'G_reg_interval': 4,
        'image_snapshot_ticks': 100, 'network_snapshot_ticks': 100,
    }, use_labels=True, xflip=False),
    # echen01/ray-conditioning train.py: "elif opts.cfg == 'raycond3-t':" branch (magnitude_ema_beta only, no
    # blur); map_depth 2, glr 0.0025; --snap default 100.
    'raycond3-t': _official({
        'G_kwargs': dict(class_name='training.networks_raycond3.Generator', mapping_kwargs=dict(num_layers=2),
                         magnitude_ema_beta=0.5 ** (32 / 20000)),
        'G_opt_kwargs': dict(lr=0.0025),
        'loss_kwargs': dict(class_name='training.ray_loss.StyleGAN2Loss'),
        'image_snapshot_ticks': 100, 'network_snapshot_ticks': 100,
    }, use_labels=True, xflip=False),
    # echen01/ray-conditioning train.py: the "else:" branch with "if opts.cfg == 'stylegan3-r' or opts.cfg ==
    # 'raycond3-r':" (as stylegan3-r, raycond3 generator); map_depth 2, glr 0.0025; --snap default 100.
    'raycond3-r': _official({
        'G_kwargs': dict(class_name='training.networks_raycond3.Generator', mapping_kwargs=dict(num_layers=2),
                         magnitude_ema_beta=0.5 ** (32 / 20000), conv_kernel=1, channel_base=65536, channel_max=1024,
                         use_radial_filters=True),
        'G_opt_kwargs': dict(lr=0.0025),
        'loss_kwargs': dict(class_name='training.ray_loss.StyleGAN2Loss', blur_init_sigma=10, blur_fade_kimg=200.0),
        'image_snapshot_ticks': 100, 'network_snapshot_ticks': 100,
    }, use_labels=True, xflip=False),
    # VinAIResearch/CREPS train.py: "if opts.cfg in ['stylegan2', 'creps']:" (class
    # f'training.networks_{opts.cfg}.Generator', G_reg_interval 4, pl_weight 2) and its "if opts.cfg == 'creps':"
    # part (G channel_base and channel_max *= 2, after D's were set); map_depth 8 and glr 0.002 for creps;
    # --snap default 50. No style mixing, no fused_modconv_default, no pl_no_weight_grad.
    'creps': _official({
        'G_kwargs': dict(class_name='training.networks_creps.Generator', mapping_kwargs=dict(num_layers=8),
                         channel_base=65536, channel_max=1024),
        'G_opt_kwargs': dict(lr=0.002),
        'loss_kwargs': dict(class_name='training.loss.StyleGAN2Loss', pl_weight=2),
        'G_reg_interval': 4,
        'image_snapshot_ticks': 50, 'network_snapshot_ticks': 50,
    }, use_labels=False, xflip=True),
}


def _eg3d_official(rendering, gamma, gen_pose_cond, gpc_reg_prob=0.5, nrr_final=None):
    """NVlabs/eg3d train.py for one preset: its keys set like StyleGAN3's (above), and its own."""
    official = _official({
        # "c.G_kwargs.class_name = 'training.triplane.TriPlaneGenerator'", "fused_modconv_default =
        # 'inference_only'", map_depth default 2, glr "0.0025" (cfg is not stylegan2).
        'G_kwargs': dict(
            class_name='training.triplane.TriPlaneGenerator', mapping_kwargs=dict(num_layers=2),
            fused_modconv_default='inference_only',
            # "rendering_options = {...}" then "rendering_options.update({...})" by --cfg.
            rendering_kwargs=dict(
                image_resolution=DATA_RESOLUTION, disparity_space_sampling=False, clamp_mode='softplus',
                superresolution_module='training.superresolution.SuperresolutionHybrid2X',
                c_gen_conditioning_zero=not gen_pose_cond, gpc_reg_prob=gpc_reg_prob if gen_pose_cond else None,
                c_scale=1, superresolution_noise_mode='none', density_reg=0.25, density_reg_p_dist=0.004,
                reg_type='l1', decoder_lr_mul=1, sr_antialias=True, **rendering),
            # "c.G_kwargs.num_fp16_res = opts.g_num_fp16_res" (0), "conv_clamp = 256 if ... > 0 else None",
            # "c.G_kwargs.sr_num_fp16_res = opts.sr_num_fp16_res" (4), "c.G_kwargs.sr_kwargs = dnnlib.EasyDict(
            # channel_base=opts.cbase, channel_max=opts.cmax, fused_modconv_default='inference_only')".
            num_fp16_res=0, conv_clamp=None, sr_num_fp16_res=4,
            sr_kwargs=dict(channel_base=32768, channel_max=512, fused_modconv_default='inference_only')),
        # "c.D_kwargs.class_name = 'training.dual_discriminator.DualDiscriminator'", "disc_c_noise =
        # opts.disc_c_noise" (0), "num_fp16_res = opts.d_num_fp16_res" (4), "conv_clamp = 256 if ... > 0".
        'D_kwargs': dict(class_name='training.dual_discriminator.DualDiscriminator', disc_c_noise=0, num_fp16_res=4,
                         conv_clamp=256),
        'G_opt_kwargs': dict(lr=0.0025),
        # "c.loss_kwargs.filter_mode = 'antialiased'", "blur_init_sigma = 10", "blur_fade_kimg = c.batch_size *
        # opts.blur_fade_kimg / 32" (200), "gpc_reg_prob = opts.gpc_reg_prob if opts.gen_pose_cond else None",
        # "gpc_reg_fade_kimg = opts.gpc_reg_fade_kimg" (1000), "dual_discrimination = True", the three
        # neural_rendering_resolution_* options (64, None, 1000), "style_mixing_prob = opts.style_mixing_prob" (0).
        'loss_kwargs': dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=gamma, filter_mode='antialiased',
                            blur_init_sigma=10, blur_fade_kimg=200.0,
                            gpc_reg_prob=gpc_reg_prob if gen_pose_cond else None, gpc_reg_fade_kimg=1000,
                            dual_discrimination=True, neural_rendering_resolution_initial=64,
                            neural_rendering_resolution_final=nrr_final, neural_rendering_resolution_fade_kimg=1000,
                            style_mixing_prob=0),
        # "if opts.density_reg > 0: c.G_reg_interval = opts.density_reg_every" (0.25 and 4 by default).
        'G_reg_interval': 4,
        'image_snapshot_ticks': 50, 'network_snapshot_ticks': 50,
    }, use_labels=True, xflip=False)  # --cond default True, --mirror default False
    del official['augment_kwargs'], official['ada_target']  # --aug default 'noaug'
    return official


# NVlabs/eg3d train.py "if opts.cfg == 'ffhq'" / "'afhq'" / "'shapenet'": rendering_options.update(...).
_EG3D_FACES = dict(depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1,
                   avg_camera_radius=2.7)
OFFICIAL.update({
    'eg3d-ffhq': _eg3d_official(dict(_EG3D_FACES, avg_camera_pivot=[0, 0, 0.2]), gamma=1, gen_pose_cond=True),
    'eg3d-afhq': _merged(_eg3d_official(dict(_EG3D_FACES, avg_camera_pivot=[0, 0, -0.06]), gamma=5,
                                        gen_pose_cond=True, gpc_reg_prob=0.8, nrr_final=128),
                         {'augment_kwargs': dict(_BGC), 'ada_target': 0.6}),  # --aug=ada
    'eg3d-shapenet': _eg3d_official(dict(depth_resolution=64, depth_resolution_importance=64, ray_start=0.1,
                                         ray_end=2.6, box_warp=1.6, white_back=True, avg_camera_radius=1.7,
                                         avg_camera_pivot=[0, 0, 0]), gamma=0.3, gen_pose_cond=False),
})



def _gram_ema_kimg(batch):
    """training_loop.py: "ExponentialMovingAverage(generator.parameters(), decay=0.999)", updated after every G step:
    0.5 ** (batch / (ema_kimg * 1000)) = 0.999."""
    return batch * math.log(0.5) / math.log(0.999) / 1000


def _gram_official(generator, camera, batch, batch_split, real_pos_lambda, grad_clip, param_groups=None):
    """The training_loop arguments of GRAM's recipe for one of its configs (microsoft/GRAM, by file and line)."""
    G_opt_kwargs = dict(class_name='torch.optim.Adam', lr=2e-5, betas=[0, 0.9], eps=1e-8)
    if param_groups is not None:
        G_opt_kwargs['param_groups'] = param_groups
    return {
        # training_loop.py set_generator(): "getattr(generators, config['generator']['class'])(**generator_args,
        # **config['generator']['kwargs'])" with representation_kwargs and renderer_kwargs; processes.py passes
        # "**config['camera']" (fov, ray_start, ray_end) to every generator call: ours takes them once.
        'G_kwargs': dict(class_name='training.networks_gram.GramGenerator', **generator, **camera),
        # set_discriminator(): "GramDiscriminator(**config['discriminator']['kwargs'])" (img_size).
        'D_kwargs': dict(class_name='training.networks_gram.GramDiscriminator', img_size=generator['img_size']),
        # set_optimizer_G / set_optimizer_D: "torch.optim.Adam(param_groups, lr=config['optimizer']['gen_lr'],
        # betas=config['optimizer']['betas'])" (gen_lr 2e-5, disc_lr 2e-4, betas (0, 0.9), torch's eps 1e-8).
        'G_opt_kwargs': G_opt_kwargs,
        'D_opt_kwargs': dict(class_name='torch.optim.Adam', lr=2e-4, betas=[0, 0.9], eps=1e-8),
        # processes.py Gan3DProcess(real_pos_lambda, r1_lambda=1, pos_lambda=15): "grad_penalty = 0.5 *
        # self.r1_lambda * grad_penalty", "nn.MSELoss()(g_pred_position, gen_positions) * self.pos_lambda", "...
        # nn.MSELoss()(r_pred_position, real_positions) * self.real_pos_lambda".
        'loss_kwargs': dict(class_name='training.loss.GramLoss', r1_gamma=1, pos_lambda=15, real_pos_lambda=real_pos_lambda),
        # "if self.r1_lambda > 0 and discriminator_ddp.module.step % self.r1_interval == 0" (r1_interval=1): R1 in
        # every D step, in the same backward as the rest; no lazy G regularisation.
        'D_reg_interval': None, 'G_reg_interval': None,
        # "nn.utils.clip_grad_norm_(discriminator_ddp.parameters(), config['optimizer'].get('grad_clip', 0.3))" after
        # the D backward; the G one after "for split in range(self.batch_split): ... scaler.scale(g_loss).backward()",
        # a sum of batch_split chunk means: batch_split times the batch mean our loop clips.
        'grad_clip': dict(G=grad_clip / batch_split, D=grad_clip),
        # torch_ema's update: decay = min(decay, (1 + num_updates) / (10 + num_updates)); no StyleGAN ramp-up.
        'ema_kimg': _gram_ema_kimg(batch), 'ema_rampup': None, 'ema_warmup': True,
        # train_D / train_G: the forwards "with torch.cuda.amp.autocast():", "scaler.scale(d_loss).backward()",
        # "scaler.unscale_(optimizer_D)" before the clip, "scaler.step(optimizer_D)"; one GradScaler for both.
        'amp': True,
        # datasets.py: every image of the dataset, flipped with probability 0.5 with its pose; real_pose=True.
        'training_set_kwargs': dict(class_name='training.dataset.ImageFolderDataset', path=DATA, use_labels=True,
                                    max_size=DATA_SIZE, xflip=True, resolution=DATA_RESOLUTION, random_seed=0),
        # Data loading has no effect on what is computed: the values every config shares.
        'data_loader_kwargs': dict(pin_memory=True, prefetch_factor=2, num_workers=3),
        'num_gpus': 8, 'batch_size': batch, 'batch_gpu': batch // 8 // batch_split,
        # train.py --n_epochs 600; no metric during training (fid_evaluation.py runs on saved generators);
        # "if i%10 == 0: tqdm.write(...)": a progress line every 10 steps; images and the latest networks every
        # --sample_interval 500 steps = 50 of those lines; torch.manual_seed(rank): 0 on the first process.
        'total_kimg': 600 * DATA_SIZE / 1000, 'metrics': [], 'kimg_per_tick': 10 * batch / 1000,
        'image_snapshot_ticks': 50, 'network_snapshot_ticks': 50, 'random_seed': 0,
    }


# microsoft/GRAM configs.py, FFHQ_default / CATS_default: 'generator' kwargs, 'representation' and 'renderer' kwargs.
def _gram_faces(hidden_dim_sample):
    return dict(z_dim=256, img_size=256, h_stddev=0.3, v_stddev=0.155, h_mean=math.pi * 0.5, v_mean=math.pi * 0.5,
                sample_dist='gaussian',
                representation_kwargs=dict(hidden_dim=256, sigma_clamp_mode='softplus', rgb_clamp_mode='widen_sigmoid',
                                           hidden_dim_sample=hidden_dim_sample, layer_num_sample=3, center=[0, 0, -1.5],
                                           init_radius=0),
                renderer_kwargs=dict(num_samples=64, num_manifolds=24, levels_start=23, levels_end=8, last_back=False,
                                     white_back=False, background=True))


_GRAM_FACE_CAMERA = dict(fov=12, ray_start=0.88, ray_end=1.12)  # 'camera' of FFHQ_default and CATS_default
OFFICIAL.update({
    'gram-ffhq': _gram_official(_gram_faces(128), _GRAM_FACE_CAMERA, batch=32, batch_split=4, real_pos_lambda=15,
                                grad_clip=1.0),
    'gram-cats': _gram_official(_gram_faces(64), _GRAM_FACE_CAMERA, batch=16, batch_split=2, real_pos_lambda=30,
                                grad_clip=1.0),
    # CARLA_default, with "'sampling_network_lr': 2e-6" (set_optimizer_G: the parameters named
    # 'module.representation.sample_network...' in their own group) and "'grad_clip': 0.3".
    'gram-carla': _gram_official(
        dict(z_dim=256, img_size=128, h_stddev=math.pi, v_stddev=math.pi * (42.5 / 180), h_mean=math.pi * 0.5,
             v_mean=math.pi * (42.5 / 180), sample_dist='spherical_uniform',
             representation_kwargs=dict(hidden_dim=256, normalize=2, sigma_clamp_mode='softplus',
                                        rgb_clamp_mode='widen_sigmoid', hidden_dim_sample=256, layer_num_sample=3,
                                        center=[0, 0, 0], init_radius=0),
             renderer_kwargs=dict(num_samples=64, num_manifolds=48, levels_start=35, levels_end=5, delta_alpha=0.02,
                                  last_back=False, white_back=True, background=False)),
        dict(fov=30, ray_start=0.7, ray_end=1.3), batch=32, batch_split=4, real_pos_lambda=15, grad_clip=0.3,
        param_groups=[dict(prefix='representation.sample_network', lr=2e-6)]),
})


def _epigraf_patch(**changes):
    # configs/training/patch_beta.yaml, with training.patch.resolution=8 at dataset.resolution 16.
    return dict(dict(enabled=True, patch_params_cond=True, min_scale_trg=0.5, max_scale=1.0, anneal_kimg=10000,
                     resolution=8, mbstd_group_size=4, distribution='beta', alpha=1.0, beta_val_start=0.001,
                     beta_val_end=0.8), **changes)


def _epigraf_official(patch=None):
    """universome/epigraf src/train.py main() on the composed config (model=epigraf, training=patch_beta,
    dataset=ffhq_posed at our test data's resolution); the networks' cfg as the spec recorded it."""
    patch = _epigraf_patch() if patch is None else patch
    G_cfg = dict(
        fmaps=1.0, cmax=512, cbase=32768, optim=dict(lr=0.0025, betas=[0.0, 0.99]), patch=patch,
        dataset=dict(path=DATA, c_dim=0, camera=dict(fov=12.0, ray_start=0.88, ray_end=1.12, radius=1.0, dist='custom'),
                     resolution=DATA_RESOLUTION, path_for_slurm_job='None/<data>', name='<data>', cube_scale=0.2,
                     white_back=False, last_back=False),
        w_dim=512, camera_cond=False, camera_cond_drop_p=0.0, camera_cond_noise_std=0.0, camera_cond_spoof_p=0.5,
        map_depth=2, ema_multiplier=0.3125, backbone='stylegan2', num_ray_steps=48, clamp_mode='softplus',
        nerf_noise_std_init=1.0, nerf_noise_kimg_growth=5000, density_shift=0.0, use_noise=True,
        tri_plane=dict(res=512, feat_dim=32, fp32=True, has_view_cond=False, posenc_period_len=0,
                       mlp=dict(n_layers=2, hid_dim=64)),
        bg_model=dict(type=None, output_channels=4, coord_dim=4, num_blocks=2, cbase=32768, cmax=128,
                      num_fp16_blocks=0, fmm=dict(enabled=False, rank=3, activation='demod'), posenc_period_len=64.0,
                      num_steps=8, start=1.0))
    D_cfg = dict(fmaps=0.5, cmax=512, cbase=32768, patch=patch, num_additional_start_blocks=1, mbstd_group_size=4,
                 camera_cond=False, camera_cond_drop_p=0.0, camera_cond_noise_std=0.0, camera_cond_raw=False,
                 hyper_mod=patch['enabled'], optim=dict(lr=0.002, betas=[0.0, 0.99]))
    return {
        # "c.G_kwargs = dnnlib.EasyDict(class_name=None, cfg=cfg.model.generator, z_dim=512, w_dim=..., ...)",
        # "channel_base = int(cbase * fmaps)", "mapping_kwargs.num_layers = map_depth", camera_cond*, "mean_camera_pose
        # = mean_camera_pose" (the mean of the dataset's camera angles), "class_name = 'training.networks_epigraf.
        # Generator'", "fused_modconv_default = 'inference_only'" (stylegan2 backbone).
        'G_kwargs': dict(class_name='training.networks_epigraf.Generator', cfg=G_cfg, z_dim=512, w_dim=512,
                         mapping_kwargs=dict(num_layers=2, camera_cond=False, camera_cond_drop_p=0.0,
                                             camera_cond_noise_std=0.0, mean_camera_pose='<data mean angles>'),
                         channel_base=32768, channel_max=512, fused_modconv_default='inference_only'),
        # "c.D_kwargs = dnnlib.EasyDict(class_name='training.networks_discriminator.Discriminator', cfg=cfg.model.
        # discriminator, ...)", "channel_base = int(cbase * fmaps)" (16384), "freeze_layers = opts.freezed",
        # "epilogue_kwargs.mbstd_group_size = cfg.model.discriminator.mbstd_group_size".
        'D_kwargs': dict(class_name='training.networks_discriminator.Discriminator', cfg=D_cfg,
                         block_kwargs=dict(freeze_layers=0), mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4),
                         channel_base=16384, channel_max=512),
        'G_opt_kwargs': dict(class_name='torch.optim.Adam', betas=[0.0, 0.99], eps=1e-8, lr=0.0025),
        'D_opt_kwargs': dict(class_name='torch.optim.Adam', betas=[0.0, 0.99], eps=1e-8, lr=0.002),
        # "c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', cfg=cfg)", "r1_gamma = ... opts.gamma".
        'loss_kwargs': dict(class_name='training.loss.StyleGAN2Loss', cfg='<the whole config>', r1_gamma=0.1),
        'data_loader_kwargs': dict(pin_memory=True, prefetch_factor=2, num_workers=3),
        # init_dataset(): path, use_labels (then opts.use_labels, false), max_size, resolution; xflip = opts.mirror.
        'training_set_kwargs': dict(class_name='training.dataset.ImageFolderDataset', path=DATA, use_labels=False,
                                    max_size=DATA_SIZE, xflip=True, resolution=DATA_RESOLUTION, random_seed=0),
        'num_gpus': 4, 'batch_size': 64, 'batch_gpu': 16,
        # training/base.yaml: metrics fid2k_full, kimg 50000, tick 4, seed 0; "c.G_reg_interval = 4 if pl_weight > 0
        # else 0", "c.D_reg_interval = 16 if r1_gamma > 0 else None", "c.ema_kimg = c.batch_size * 10 / 32".
        'metrics': ['fid2k_full'], 'total_kimg': 50000, 'kimg_per_tick': 4, 'random_seed': 0,
        'G_reg_interval': 0, 'D_reg_interval': 16, 'ema_kimg': 20.0,
        # augment.mode ada with augment.probs (every multiplier 1 but xflip 0), "c.ada_target = opts.target" (0.6).
        'augment_kwargs': dict(_BGC, xflip=0), 'ada_target': 0.6,
        # snap 250 and image_snap 100 ticks (the training loop reads them from cfg.training).
        'image_snapshot_ticks': 100, 'network_snapshot_ticks': 250,
        # "c = dnnlib.EasyDict(cfg=cfg)", "c.resume_whole_state = False".
        'cfg': '<the whole config>', 'resume_whole_state': False,
    }


OFFICIAL['epigraf'] = _epigraf_official()


class ByConfig:
    """A variant's value that depends on the config: `default`, or `per_config[cfg]`."""

    def __init__(self, default, per_config):
        self.default, self.per_config = default, per_config

    def resolve(self, cfg):
        return self.per_config.get(cfg, self.default)


def _each(cfgs, value):
    return {cfg: value for cfg in cfgs}


# Variants: (name, extra arguments, configs it applies to, what the official train.py then changes;
# dotted key paths, ABSENT = not set). Both official train.py files treat these options alike.
Variant = collections.namedtuple('Variant', 'name args configs changes')
VARIANTS = [
    Variant('readme', [], None, {}),
    # "if opts.aug != 'noaug':" -- no augment_kwargs and no ada_target.
    Variant('noaug', ['--aug=noaug'], None, {'augment_kwargs': ABSENT, 'ada_target': ABSENT}),
    # "if opts.aug == 'fixed': c.augment_p = opts.p".
    Variant('fixed-p', ['--aug=fixed', '--p=0.3'], NON_EG3D, {'ada_target': ABSENT, 'augment_p': 0.3}),
    # "if opts.aug == 'ada': c.ada_target = opts.target".
    Variant('ada-target', ['--target=0.7'], NON_EG3D, {'ada_target': 0.7}),
    # "if opts.fp32: c.G_kwargs.num_fp16_res = c.D_kwargs.num_fp16_res = 0; ... conv_clamp = None". CREPS's
    # train.py sets G's with the keys swapped ("if opts.cfg != 'creps': c.G_kwargs.fc_clamp = None else:
    # c.G_kwargs.conv_clamp = None"): for creps that is G_kwargs.conv_clamp = None, as here.
    Variant('fp32', ['--fp32=1'], NON_EG3D, {'G_kwargs.num_fp16_res': 0, 'D_kwargs.num_fp16_res': 0,
                                         'G_kwargs.conv_clamp': None, 'D_kwargs.conv_clamp': None}),
    # "if opts.nobench: c.cudnn_benchmark = False".
    Variant('nobench', ['--nobench=1'], None, {'cudnn_benchmark': False}),
    # "c.G_kwargs.mapping_kwargs.num_layers = ... if opts.map_depth is None else opts.map_depth".
    Variant('map-depth', ['--map-depth=4'], STYLEGAN_D_CONFIGS, {'G_kwargs.mapping_kwargs.num_layers': 4}),
    # "c.G_opt_kwargs.lr = ... if opts.glr is None else opts.glr", "c.D_opt_kwargs.lr = opts.dlr".
    Variant('glr-dlr', ['--glr=0.001', '--dlr=0.003'], None, {'G_opt_kwargs.lr': 0.001, 'D_opt_kwargs.lr': 0.003}),
    # "c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap".
    Variant('snap', ['--snap=7'], None, {'image_snapshot_ticks': 7, 'network_snapshot_ticks': 7}),
    # "c.G_kwargs.channel_base = c.D_kwargs.channel_base = opts.cbase" (cmax alike), then "*= 2" for -R's G only.
    Variant('cbase-cmax', ['--cbase=16384', '--cmax=256'], NON_EG3D, {
        'G_kwargs.channel_base': ByConfig(16384, _each(R_CONFIGS + ('creps',), 32768)),
        'G_kwargs.channel_max': ByConfig(256, _each(R_CONFIGS + ('creps',), 512)),
        'D_kwargs.channel_base': 16384, 'D_kwargs.channel_max': 256}),
    # Batch formulas: batch_gpu = --batch-gpu, "c.ema_kimg = c.batch_size * 10 / 32", "magnitude_ema_beta =
    # 0.5 ** (c.batch_size / (20 * 1e3))" (StyleGAN3 generators), "blur_fade_kimg = c.batch_size * 200 / 32" (-R).
    Variant('batch', ['--batch=64', '--batch-gpu=4'], None, {
        'batch_size': 64, 'batch_gpu': 4, 'ema_kimg': ByConfig(20.0, _each(GRAM_CONFIGS, _gram_ema_kimg(64))),
        'kimg_per_tick': ByConfig(4, _each(GRAM_CONFIGS, 0.64)),  # GRAM: a line every 10 steps
        'G_kwargs.magnitude_ema_beta': ByConfig(ABSENT, _each(SG3_CONFIGS, 0.5 ** (64 / 20000))),
        'loss_kwargs.blur_fade_kimg': ByConfig(ABSENT, _each(R_CONFIGS + EG3D_CONFIGS, 400.0))}),
    # "c.D_kwargs.block_kwargs.freeze_layers = opts.freezed", "...epilogue_kwargs.mbstd_group_size = opts.mbstd_group".
    Variant('freezed-mbstd', ['--freezed=2', '--mbstd-group=2'], STYLEGAN_D_CONFIGS, {
        'D_kwargs.block_kwargs.freeze_layers': 2, 'D_kwargs.epilogue_kwargs.mbstd_group_size': 2}),
    # "c.metrics = opts.metrics", "c.total_kimg = opts.kimg", "c.kimg_per_tick = opts.tick",
    # "c.random_seed = c.training_set_kwargs.random_seed = opts.seed", "num_workers = opts.workers".
    Variant('misc', ['--metrics=none', '--kimg=1000', '--tick=8', '--seed=3', '--workers=1'], None, {
        'metrics': [], 'total_kimg': 1000, 'kimg_per_tick': 8, 'random_seed': 3, 'training_set_kwargs.random_seed': 3,
        'data_loader_kwargs.num_workers': 1}),
    # "if opts.resume is not None: c.resume_pkl = opts.resume; c.ada_kimg = 100; c.ema_rampup = None;
    # c.loss_kwargs.blur_init_sigma = 0" (a pickle without a training state beside it: the official fine-tuning).
    Variant('resume', ['--resume=<snapshot>'], NON_EG3D, {
        'resume_pkl': '<snapshot>', 'ada_kimg': 100, 'ema_rampup': None, 'loss_kwargs.blur_init_sigma': 0}),
    # The StyleGAN configs on camera-labelled data with --cond=1: "c.training_set_kwargs.use_labels = opts.cond".
    Variant('cond', ['--cond=1', '--mirror-cameras=1'], TWO_D_CONFIGS, {'training_set_kwargs.use_labels': True}),
    # The raycond configs with --mirror=1: "c.training_set_kwargs.xflip = opts.mirror".
    Variant('mirror', ['--mirror=1', '--mirror-cameras=1'], RAYCOND_CONFIGS, {'training_set_kwargs.xflip': True}),
    # NVlabs/eg3d train.py (no --fp32 there): "c.G_kwargs.num_fp16_res = opts.g_num_fp16_res; c.G_kwargs.conv_clamp
    # = 256 if opts.g_num_fp16_res > 0 else None", D alike, "c.G_kwargs.sr_num_fp16_res = opts.sr_num_fp16_res".
    Variant('eg3d-fp16-res', ['--g_num_fp16_res=2', '--d_num_fp16_res=0', '--sr_num_fp16_res=0'], EG3D_CONFIGS, {
        'G_kwargs.num_fp16_res': 2, 'G_kwargs.conv_clamp': 256, 'D_kwargs.num_fp16_res': 0,
        'D_kwargs.conv_clamp': None, 'G_kwargs.sr_num_fp16_res': 0}),
    # "c.G_kwargs.channel_base = c.D_kwargs.channel_base = opts.cbase" and "sr_kwargs = dnnlib.EasyDict(
    # channel_base=opts.cbase, channel_max=opts.cmax, ...)".
    Variant('eg3d-cbase-cmax', ['--cbase=16384', '--cmax=256'], EG3D_CONFIGS, {
        'G_kwargs.channel_base': 16384, 'G_kwargs.channel_max': 256, 'D_kwargs.channel_base': 16384,
        'D_kwargs.channel_max': 256, 'G_kwargs.sr_kwargs.channel_base': 16384, 'G_kwargs.sr_kwargs.channel_max': 256}),
    # The neural rendering resolution schedule: "c.loss_kwargs.neural_rendering_resolution_* = opts.*".
    Variant('eg3d-nrr', ['--neural_rendering_resolution_initial=32', '--neural_rendering_resolution_final=64',
                         '--neural_rendering_resolution_fade_kimg=500'], EG3D_CONFIGS, {
        'loss_kwargs.neural_rendering_resolution_initial': 32, 'loss_kwargs.neural_rendering_resolution_final': 64,
        'loss_kwargs.neural_rendering_resolution_fade_kimg': 500}),
    # Generator pose conditioning: "c_gen_conditioning_zero = not opts.gen_pose_cond", "gpc_reg_prob = opts.gpc_reg_prob
    # if opts.gen_pose_cond else None" (rendering and loss), "gpc_reg_fade_kimg = opts.gpc_reg_fade_kimg",
    # "'c_scale': opts.c_scale".
    Variant('eg3d-gpc', ['--gen_pose_cond=True', '--gpc_reg_prob=0.3', '--gpc_reg_fade_kimg=100', '--c-scale=2'],
            EG3D_CONFIGS, {
        'G_kwargs.rendering_kwargs.c_gen_conditioning_zero': False, 'G_kwargs.rendering_kwargs.gpc_reg_prob': 0.3,
        'loss_kwargs.gpc_reg_prob': 0.3, 'loss_kwargs.gpc_reg_fade_kimg': 100, 'G_kwargs.rendering_kwargs.c_scale': 2}),
    # Density regularisation off: "if opts.density_reg > 0: c.G_reg_interval = ..." is skipped.
    Variant('eg3d-no-density-reg', ['--density_reg=0'], EG3D_CONFIGS, {
        'G_kwargs.rendering_kwargs.density_reg': 0, 'G_reg_interval': ABSENT}),
    Variant('eg3d-density-reg', ['--density_reg=0.5', '--density_reg_every=8', '--density_reg_p_dist=0.01'],
            EG3D_CONFIGS, {'G_kwargs.rendering_kwargs.density_reg': 0.5, 'G_reg_interval': 8,
                           'G_kwargs.rendering_kwargs.density_reg_p_dist': 0.01}),
    # "D_kwargs.disc_c_noise = opts.disc_c_noise", "'superresolution_noise_mode': opts.sr_noise_mode",
    # "'decoder_lr_mul': opts.decoder_lr_mul", "blur_fade_kimg = c.batch_size * opts.blur_fade_kimg / 32",
    # "style_mixing_prob = opts.style_mixing_prob".
    Variant('eg3d-misc', ['--disc_c_noise=1', '--sr_noise_mode=random', '--decoder_lr_mul=0.5', '--blur_fade_kimg=100',
                          '--style_mixing_prob=0.5'], EG3D_CONFIGS, {
        'D_kwargs.disc_c_noise': 1, 'G_kwargs.rendering_kwargs.superresolution_noise_mode': 'random',
        'G_kwargs.rendering_kwargs.decoder_lr_mul': 0.5, 'loss_kwargs.blur_fade_kimg': 100.0,
        'loss_kwargs.style_mixing_prob': 0.5}),
    # EG3D's --aug default is noaug; "if opts.aug != 'noaug': c.augment_kwargs = dnnlib.EasyDict(class_name=
    # 'training.augment.AugmentPipe', xflip=1, ...)", then "if opts.aug == 'ada': c.ada_target = opts.target",
    # "if opts.aug == 'fixed': c.augment_p = opts.p".
    Variant('eg3d-ada', ['--aug=ada', '--target=0.7'], EG3D_CONFIGS,
            {'augment_kwargs': dict(_BGC), 'ada_target': 0.7}),
    Variant('eg3d-fixed-p', ['--aug=fixed', '--p=0.3'], EG3D_CONFIGS,
            {'augment_kwargs': dict(_BGC), 'ada_target': ABSENT, 'augment_p': 0.3}),
    # "if opts.resume is not None: c.resume_pkl = opts.resume; c.ada_kimg = 100; c.ema_rampup = None; if not
    # opts.resume_blur: c.loss_kwargs.blur_init_sigma = 0; c.loss_kwargs.gpc_reg_fade_kimg = 0".
    Variant('eg3d-resume', ['--resume=<eg3d snapshot>'], EG3D_CONFIGS, {
        'resume_pkl': '<eg3d snapshot>', 'ada_kimg': 100, 'ema_rampup': None, 'loss_kwargs.blur_init_sigma': 0,
        'loss_kwargs.gpc_reg_fade_kimg': 0}),
    Variant('eg3d-resume-blur', ['--resume=<eg3d snapshot>', '--resume_blur=True'], EG3D_CONFIGS, {
        'resume_pkl': '<eg3d snapshot>', 'ada_kimg': 100, 'ema_rampup': None}),
    # "if opts.sr_module != None: sr_module = opts.sr_module".
    Variant('eg3d-sr-module', ['--sr-module=training.superresolution.SuperresolutionHybrid4X'], EG3D_CONFIGS, {
        'G_kwargs.rendering_kwargs.superresolution_module': 'training.superresolution.SuperresolutionHybrid4X'}),
    # GRAM has no augmentation; ours adds the StyleGAN options on request ("if opts.aug != 'noaug': ...").
    # GRAM train.py "--patch_split": Gan3DProcess(patch_split=opt.patch_split).
    # train.py has no precision option; our --fp32 turns GRAM's autocast and GradScaler off.
    Variant('gram-fp32', ['--fp32=1'], GRAM_CONFIGS, {'amp': False}),
    Variant('gram-patch-split', ['--patch-split=4'], GRAM_CONFIGS, {'loss_kwargs.patch_split': 4}),
    Variant('gram-ada', ['--aug=ada', '--target=0.7'], GRAM_CONFIGS, {'augment_kwargs': dict(_BGC), 'ada_target': 0.7}),
    Variant('gram-fixed-p', ['--aug=fixed', '--p=0.3'], GRAM_CONFIGS, {'augment_kwargs': dict(_BGC), 'augment_p': 0.3}),
    # GRAM's own layout on one GPU: the 4 images of one of its GPUs, G in chunks of 1.
    Variant('gram-one-gpu', ['--gpus=1', '--batch=4', '--batch-gpu=1'], ('gram-ffhq', 'gram-carla'), {
        'num_gpus': 1, 'batch_size': 4, 'batch_gpu': 1, 'ema_kimg': _gram_ema_kimg(4), 'kimg_per_tick': 0.04}),
    # EpiGRAF's Hydra overrides under our names: training.gamma=auto ("0.0002 * (cfg.dataset.resolution ** 2) /
    # opts.batch_size"), training=patch_uniform with training.patch.anneal_kimg, model.generator.camera_cond /
    # model.discriminator.camera_cond, and the tri-plane and ray options.
    Variant('epigraf-gamma-auto', ['--gamma=auto'], EPIGRAF_CONFIGS, {'loss_kwargs.r1_gamma': 0.0002 * 16 ** 2 / 64}),
    Variant('epigraf-patch-uniform', ['--patch-dist=uniform', '--patch-anneal-kimg=500'], EPIGRAF_CONFIGS, {
        'G_kwargs.cfg.patch': _epigraf_patch(distribution='uniform', anneal_kimg=500),
        'D_kwargs.cfg.patch': _epigraf_patch(distribution='uniform', anneal_kimg=500)}),
    Variant('epigraf-camera-cond', ['--camera-cond-g=1', '--camera-cond-g-drop-p=0.2', '--camera-cond-d=0'],
            EPIGRAF_CONFIGS, {'G_kwargs.cfg.camera_cond': True, 'G_kwargs.mapping_kwargs.camera_cond': True,
                              'G_kwargs.cfg.camera_cond_drop_p': 0.2, 'G_kwargs.mapping_kwargs.camera_cond_drop_p': 0.2}),
    Variant('epigraf-plane-background', ['--bg-model=plane'], EPIGRAF_CONFIGS, {'G_kwargs.cfg.bg_model.type': 'plane'}),
    Variant('epigraf-sphere-background', ['--bg-model=sphere'], EPIGRAF_CONFIGS, {'G_kwargs.cfg.bg_model.type': 'sphere'}),
    Variant('epigraf-tri-plane', ['--triplane-res=64', '--triplane-channels=16', '--ray-steps=24',
                                  '--nerf-noise-kimg=100', '--white-back=1'], EPIGRAF_CONFIGS, {
        'G_kwargs.cfg.tri_plane.res': 64, 'G_kwargs.cfg.tri_plane.feat_dim': 16, 'G_kwargs.cfg.num_ray_steps': 24,
        'G_kwargs.cfg.nerf_noise_kimg_growth': 100, 'G_kwargs.cfg.dataset.white_back': True}),
]


# ----------------------------------------------------------------------------------------------
# Where ours differs from the official train.py on purpose.

# Conditions under which a deliberate difference shows; `o` maps the command line's --name to its value.
CONDITIONS = {
    'always': lambda o: True,
    'on --device=cpu': lambda o: o.get('device') == 'cpu',
    'without --fp32=1': lambda o: o.get('fp32') != '1',
    'with --fp32=1': lambda o: o.get('fp32') == '1',
    'without --nobench=1': lambda o: o.get('nobench') != '1',
    'without --mirror-cameras=1': lambda o: o.get('mirror-cameras') != '1',
    'with --mirror-cameras=1': lambda o: o.get('mirror-cameras') == '1',
    'with --resume': lambda o: o.get('resume') is not None,
    'without --tick': lambda o: 'tick' not in o,
    'without --kimg': lambda o: 'kimg' not in o,
    'without --metrics': lambda o: 'metrics' not in o,
    'without --snap': lambda o: 'snap' not in o,
    'without --camera-cond-d=0': lambda o: o.get('camera-cond-d') != '0',
    # The test dataset's labels are 25-float cameras: --cond=1 makes them the labels.
    'camera labels (--cond=1)':  # EG3D and GRAM: --cond=True by default
        lambda o: o.get('cond') == '1' or o.get('cfg') in EG3D_CONFIGS + GRAM_CONFIGS + EPIGRAF_CONFIGS,
    'camera labels (--cond=1) and --aug other than noaug':
        lambda o: (o.get('cond') == '1' and o.get('aug', 'ada') != 'noaug'
                   or o.get('cfg') in EG3D_CONFIGS + GRAM_CONFIGS and o.get('aug', 'noaug') != 'noaug'  # --aug=noaug
                   or o.get('cfg') in EPIGRAF_CONFIGS and o.get('aug', 'ada') != 'noaug'),  # EpiGRAF: ada
}

ALL_CONFIGS = NON_EG3D + EG3D_CONFIGS + GRAM_CONFIGS + EPIGRAF_CONFIGS
_EPIGRAF_CFG_REASON = ("EpiGRAF's networks read their options from its whole Hydra config; ours builds the same keys "
                       "but these")
CONV_CLAMP_CONFIGS = STYLEGAN_CONFIGS + RAYCOND_CONFIGS  # generators whose clamp is conv_clamp
Difference = collections.namedtuple('Difference', 'path configs when ours reason')
DELIBERATE_DIFFERENCES = [
    # Keys only ours has.
    Difference('device', ALL_CONFIGS, 'on --device=cpu', 'cpu',
               "--device=cpu|cuda (the official train.py is CUDA-only); train.py's launcher takes it out before "
               "calling training_loop"),
    Difference('metric_detectors', ALL_CONFIGS, 'always', {},
               '--detector: local metric detector files; {} downloads the official ones, as the official loop'),
    Difference('grid_size', ALL_CONFIGS, 'always', None,
               '--grid: size of the image snapshots; None is the official ~7680x4320-pixel grid (8x4 on the CPU)'),
    Difference('trust_code', ALL_CONFIGS, 'always', False,
               '--trust-code: --resume pickles are read without executing their embedded code unless given'),
    Difference('saved_options', ALL_CONFIGS, 'always', ANY,
               'the command-line options, stored in every training state so that --resume=<run dir> continues exactly'),
    Difference('training_set_kwargs.xflip_camera_labels', ALL_CONFIGS, 'without --mirror-cameras=1', False,
               '--mirror-cameras: mirror the camera poses with the pixels (the official xflip leaves poses '
               'unmirrored)'),
    Difference('training_set_kwargs.xflip_camera_labels', ALL_CONFIGS, 'with --mirror-cameras=1', True,
               '--mirror-cameras=1: each mirrored image gets the mirrored camera pose'),
    Difference('cudnn_benchmark', ALL_CONFIGS, 'without --nobench=1', True,
               'always printed; True is the training loop default the official train.py relies on'),
    Difference('G_kwargs.label_kind', ALL_CONFIGS, 'camera labels (--cond=1)', 'camera',
               'the generator declares that its label is a camera (training.capabilities), instead of the code '
               'around it guessing from c_dim == 25'),
    Difference('resume_state', ALL_CONFIGS, 'with --resume', None,
               'the training state beside the snapshot (exact continuation); None for a weights-only pickle, which '
               'gets the official fine-tuning settings'),
    *[Difference(f'{net}_kwargs.{key}', configs_, 'without --fp32=1', value,
                 'explicit class default: the official train.py leaves it unset and the classes default to the same '
                 '(fp16 on the 4 highest resolutions, clamp 256)')
      for net, configs_ in (('G', CONV_CLAMP_CONFIGS), ('D', NON_EG3D + EPIGRAF_CONFIGS))
      for key, value in (('num_fp16_res', 4), ('conv_clamp', 256))],
    Difference('G_kwargs.conv_clamp', ('creps',), 'with --fp32=1', ABSENT,
               "the official --fp32 branch passes conv_clamp=None to the CREPS generator, whose layers take no such "
               "argument (the run would fail); ours turns the clamp off under its one name, fc_clamp"),
    Difference('G_kwargs.fc_clamp', ('creps',), 'with --fp32=1', None,
               'the CREPS clamp, off with --fp32 (the official train.py meant this: see G_kwargs.conv_clamp)'),
    # Values that differ.
    Difference('data_loader_kwargs.pin_memory', ALL_CONFIGS, 'on --device=cpu', False,
               'pinned host memory only helps copies to CUDA; ours pins on --device=cuda only'),
    Difference('loss_kwargs.class_name', RAYCOND_CONFIGS, 'always', 'training.loss.RayConditioningLoss',
               "our ray-conditioning loss (StyleGAN2Loss whose synthesis receives the camera) lives in "
               "training/loss.py; the official training.ray_loss module does not exist here"),
    Difference('G_kwargs.legacy_rays', RAYCOND_CONFIGS, 'always', False,
               "physically correct camera rays; the official release's non-physical ray field (legacy_rays=True) is "
               "used only to load its published checkpoints"),
    Difference('G_kwargs.class_name', EG3D_CONFIGS, 'always', 'training.networks_triplane.TriPlaneGenerator',
               "EG3D's classes live in one module here (training/networks_triplane.py); official pickles naming "
               "training.triplane still load"),
    Difference('D_kwargs.class_name', EG3D_CONFIGS, 'always', 'training.networks_triplane.DualDiscriminator',
               'EG3D\'s classes live in one module here (training/networks_triplane.py)'),
    Difference('loss_kwargs.class_name', EG3D_CONFIGS, 'always', 'training.loss.TriPlaneLoss',
               "EG3D's loss is a subclass of our StyleGAN2Loss (training/loss.py), not a second StyleGAN2Loss"),
    Difference('G_kwargs.img_size', GRAM_CONFIGS, 'always', DATA_RESOLUTION,
               "the networks are built for --data's resolution: GRAM resizes its images to img_size (256, CARLA 128) "
               'while loading them, ours trains on the zip dataset_tool.py packed at that resolution'),
    Difference('D_kwargs.img_size', GRAM_CONFIGS, 'always', DATA_RESOLUTION, "as G_kwargs.img_size"),
    # The test data are EG3D-style cameras (synthetic shapes: radius 2.7, focal 4.2647); GRAM's own data
    # (radius 1, its preset's fov) would keep the official values.
    Difference('G_kwargs.label_scale', GRAM_CONFIGS, 'always', ANY,  # pinned by test_gram_adopts_the_data_cameras
               "labels whose cameras are not at GRAM's radius 1 are scaled into GRAM's world (the images stay)"),
    Difference('G_kwargs.fov', GRAM_CONFIGS, 'always', ANY,  # pinned by test_gram_adopts_the_data_cameras
               "the fakes' cameras take the data's field of view (GRAM's data are made at its preset's fov)"),
    Difference('kimg_per_tick', GRAM_CONFIGS, 'without --tick', 4,
               "GRAM prints a progress line every 10 steps (0.32 kimg at batch 32); our tick also writes stats.jsonl "
               "and counts the snapshot interval, and keeps the 4 kimg every config has (images and networks every "
               "50 ticks = 200 kimg, GRAM's every 500 steps = 16 kimg)"),
    Difference('total_kimg', GRAM_CONFIGS, 'without --kimg', 25000,
               "GRAM's --n_epochs=600 counts passes over its dataset; ours counts images, --kimg default 25000 "
               "(its released models trained 70k-150k steps = 2240-4800 kimg at batch 32)"),
    Difference('metrics', GRAM_CONFIGS, 'without --metrics', ['fid50k_full'],
               "GRAM computes no metric while training (fid_evaluation.py, run afterwards); ours evaluates the "
               "--metrics default at each network snapshot, --metrics=none as GRAM"),
    # EpiGRAF (universome/epigraf src/train.py and its composed Hydra config).
    Difference('cfg', EPIGRAF_CONFIGS, 'always', ABSENT,
               "EpiGRAF passes its whole Hydra config to the loop; ours passes the networks and the loss what they use"),
    Difference('resume_whole_state', EPIGRAF_CONFIGS, 'always', ABSENT,
               "EpiGRAF's training.resume=latest flag; ours resumes a run exactly from its training state (--resume=<run dir>)"),
    Difference('loss_kwargs.class_name', EPIGRAF_CONFIGS, 'always', 'training.loss.EpiGRAFLoss',
               "EpiGRAF's patch-wise StyleGAN2Loss is a subclass of our StyleGAN2Loss (training/loss.py)"),
    Difference('loss_kwargs.cfg', EPIGRAF_CONFIGS, 'always', ABSENT,
               "EpiGRAF's loss reads training.patch, model.loss_kwargs and camera_cond_spoof_p from the whole config; "
               "ours takes them as the arguments below"),
    Difference('loss_kwargs.patch_kwargs', EPIGRAF_CONFIGS, 'always', ANY, "training.patch (pinned with G's cfg)"),
    Difference('loss_kwargs.camera_cond_spoof_p', EPIGRAF_CONFIGS, 'always', 0.5, 'model.generator.camera_cond_spoof_p'),
    Difference('loss_kwargs.blur_init_sigma', EPIGRAF_CONFIGS, 'always', 10, 'model.loss_kwargs.blur_init_sigma'),
    Difference('loss_kwargs.blur_fade_kimg', EPIGRAF_CONFIGS, 'always', 200, 'model.loss_kwargs.blur_fade_kimg'),
    Difference('G_reg_interval', EPIGRAF_CONFIGS, 'always', None,
               "no lazy G regularisation: EpiGRAF's loop spells it 0 (its 'reg_interval in [None, 0]'), ours None"),
    Difference('D_kwargs.class_name', EPIGRAF_CONFIGS, 'always', 'training.networks_epigraf.Discriminator',
               "EpiGRAF's classes live in one module here (training/networks_epigraf.py)"),
    Difference('D_kwargs.patch_resolution', EPIGRAF_CONFIGS, 'always', 8,
               "EpiGRAF's loop builds D with img_resolution = the patch's; ours passes the dataset's and this"),
    Difference('D_kwargs.cfg.camera_cond', EPIGRAF_CONFIGS, 'without --camera-cond-d=0', True,
               "D sees the camera by default: EpiGRAF's default (off) gives flat shapes (universome/epigraf #12; its "
               "README recommends model.discriminator.camera_cond=true camera_cond_drop_p=0.5); --camera-cond-d=0 is EpiGRAF's"),
    Difference('D_kwargs.cfg.camera_cond_drop_p', EPIGRAF_CONFIGS, 'always', 0.5, 'as D_kwargs.cfg.camera_cond'),
    Difference('G_kwargs.mapping_kwargs.mean_camera_pose', EPIGRAF_CONFIGS, 'always', ANY,
               "the mean (yaw, pitch, roll) of the data's cameras, as EpiGRAF (pinned by test_epigraf_adopts_the_data_cameras)"),
    Difference('training_set_kwargs.use_labels', EPIGRAF_CONFIGS, 'always', True,
               "our camera labels are the dataset's labels (EpiGRAF reads camera_angles apart from class labels, "
               "which are off)"),
    Difference('G_kwargs.cfg.dataset.name', EPIGRAF_CONFIGS, 'always', ABSENT, _EPIGRAF_CFG_REASON + ' (unused)'),
    Difference('G_kwargs.cfg.dataset.path_for_slurm_job', EPIGRAF_CONFIGS, 'always', ABSENT,
               _EPIGRAF_CFG_REASON + ' (its slurm launcher)'),
    # The test data are EG3D-style cameras (synthetic shapes: radius 2.7, focal 4.2647); EpiGRAF's own data
    # (radius 1, 12 degrees) keep the official values.
    *[Difference(f'G_kwargs.cfg.dataset.{key}', EPIGRAF_CONFIGS, 'always', ANY,
                 "the rays, the cube and the field of view follow the data's cameras (pinned by "
                 "test_epigraf_adopts_the_data_cameras)")
      for key in ('camera.fov', 'camera.ray_start', 'camera.ray_end', 'camera.radius', 'cube_scale')],
    Difference('metrics', EPIGRAF_CONFIGS, 'without --metrics', ['fid50k_full'],
               "EpiGRAF evaluates fid2k_full while training (it reads far worse than FID50k, universome/epigraf #13); "
               "ours the --metrics default of every config"),
    Difference('total_kimg', EPIGRAF_CONFIGS, 'without --kimg', 25000, "the --kimg default of every config (EpiGRAF's 50000)"),
    Difference('image_snapshot_ticks', EPIGRAF_CONFIGS, 'without --snap', 50,
               "one --snap for images and networks (EpiGRAF: image_snap 100 and snap 250 ticks)"),
    Difference('network_snapshot_ticks', EPIGRAF_CONFIGS, 'without --snap', 50, 'as image_snapshot_ticks'),
    # Keys only the official dict has.
    *[Difference(f'augment_kwargs.{key}', ALL_CONFIGS, 'camera labels (--cond=1) and --aug other than noaug', ABSENT,
                 'colour-only augmentation on camera-labelled data: geometric augmentation would break the image-pose '
                 "pairing (an unset multiplier is AugmentPipe's 0)")
      for key in _GEOMETRIC_AUGMENTATIONS],
]


# ----------------------------------------------------------------------------------------------
# Comparison.

def _apply(official, cfg, changes, substitutions):
    result = copy.deepcopy(official)
    for path, value in changes.items():
        if isinstance(value, ByConfig):
            value = value.resolve(cfg)
        value = substitutions.get(value, value) if isinstance(value, str) else value
        *parents, last = path.split('.')
        node = result
        for key in parents:
            node = node[key]
        if value is ABSENT:
            node.pop(last, None)
        else:
            node[last] = value
    return result


def _equal(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return not _differences(a, b)
    return type(a) is type(b) and a == b


def _same(a, b):
    return a is b if ABSENT in (a, b) else _equal(a, b)


def _differences(ours, official, prefix=''):
    """-> {dotted key path: (our value, official value)}, ABSENT for a missing key; nested dicts recursively."""
    found = {}
    for key in sorted(set(ours) | set(official)):
        path = prefix + key
        a, b = ours.get(key, ABSENT), official.get(key, ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            found.update(_differences(a, b, path + '.'))
        elif a is ABSENT or b is ABSENT or not _equal(a, b):
            found[path] = (a, b)
    return found


def _parse_args(args):
    options = {}
    for arg in args:
        name, _, value = arg[2:].partition('=')
        options[name] = value
    return options


def _applicable_differences(cfg, options):
    applicable = {}
    for entry in DELIBERATE_DIFFERENCES:
        if cfg in entry.configs and CONDITIONS[entry.when](options):
            assert entry.path not in applicable, f'two DELIBERATE_DIFFERENCES entries apply to {entry.path} here'
            applicable[entry.path] = entry
    return applicable


def unexplained_differences(ours, official, cfg, options):
    """One line for each difference not in DELIBERATE_DIFFERENCES, and for each applicable entry that is none."""
    found = _differences(ours, official)
    expected = _applicable_differences(cfg, options)
    problems = []
    for path, (our_value, official_value) in found.items():
        entry = expected.get(path)
        if entry is None:
            problems.append(f'{path}: ours {our_value!r}, official {official_value!r} (not in DELIBERATE_DIFFERENCES)')
        elif entry.ours is not ANY and not _same(our_value, entry.ours):
            problems.append(f'{path}: ours {our_value!r}, DELIBERATE_DIFFERENCES says {entry.ours!r}')
    for path, entry in expected.items():
        if path not in found:
            problems.append(f'{path}: listed in DELIBERATE_DIFFERENCES ({entry.when}) but equal to the official value')
    return problems


# ----------------------------------------------------------------------------------------------
# Tests.

@pytest.fixture(scope='module')
def recipe_files(tmp_path_factory):
    """-> the camera-labelled 16x16 zip and tiny StyleGAN2 and EG3D snapshot pickles without training state."""
    root = tmp_path_factory.mktemp('recipes')
    data = str(root / 'shapes16.zip')
    result = CliRunner().invoke(dataset_tool.main, ['--source=synthetic:shapes', f'--dest={data}',
                                                    f'--resolution={DATA_RESOLUTION}x{DATA_RESOLUTION}',
                                                    f'--max-images={DATA_SIZE}'])
    assert result.exit_code == 0, result.output
    snapshot = tiny_networks.save_snapshot(root / 'network-snapshot-000000.pkl', tiny_networks.stylegan2_generator())
    (root / 'eg3d').mkdir()
    eg3d_snapshot = tiny_networks.save_snapshot(root / 'eg3d' / 'network-snapshot-000000.pkl',
                                                tiny_networks.triplane_generator(resolution=DATA_RESOLUTION))
    return {DATA: data, '<snapshot>': snapshot, '<eg3d snapshot>': eg3d_snapshot}


def _cases():
    return [(cfg, variant) for cfg in configs.config_names() for variant in VARIANTS
            if variant.configs is None or cfg in variant.configs]


def _command_line(cfg, variant, files):
    args = [*COMMAND_LINES[cfg], *OUR_EXTRA_ARGS, *variant.args]
    for placeholder in ('<snapshot>', '<eg3d snapshot>'):
        args = [arg.replace(placeholder, files[placeholder]) for arg in args]
    return [f'--data={files[DATA]}', *args]


@pytest.mark.parametrize('cfg, variant', _cases(), ids=[f'{cfg}-{variant.name}' for cfg, variant in _cases()])
def test_recipe_matches_the_official_train_py(tmp_path, recipe_files, cfg, variant):
    args = _command_line(cfg, variant, recipe_files)
    ours, _ = dry_run(tmp_path / 'out', *args)
    official = _apply(OFFICIAL[cfg], cfg, variant.changes, recipe_files)
    official = _apply(official, cfg, {'training_set_kwargs.path': recipe_files[DATA]}, {})
    if cfg in EPIGRAF_CONFIGS:  # EpiGRAF's networks keep the dataset path in their config too
        official = _apply(official, cfg, {'G_kwargs.cfg.dataset.path': recipe_files[DATA]}, {})
    problems = unexplained_differences(ours, official, cfg, _parse_args(args))
    assert not problems, f'train.py {" ".join(args)}:\n  ' + '\n  '.join(problems)


def test_every_registered_config_has_a_recipe():
    """A config registered later without an OFFICIAL entry and a command line fails here, not silently."""
    names = set(configs.config_names())
    assert names, 'no config is registered'
    assert {cfg for cfg, _ in _cases()} == names
    assert set(OFFICIAL) == names and set(COMMAND_LINES) == names
    for entry in DELIBERATE_DIFFERENCES:
        assert entry.when in CONDITIONS and set(entry.configs) <= names, entry


def test_the_comparison_rule():
    """Changed, missing and extra keys are reported; ints equal floats, bools do not; stale or wrong entries fail."""
    official = dict(a=1, b=dict(c=[0, 0.99], d='x'), e=None)
    assert _differences(dict(a=1.0, b=dict(c=[0.0, 0.99], d='x'), e=None), official) == {}
    assert unexplained_differences(dict(a=2, b=dict(c=[0, 0.99]), e=None, f=True), official, 'nosuchcfg', {}) == [
        'a: ours 2, official 1 (not in DELIBERATE_DIFFERENCES)',
        "b.d: ours <absent>, official 'x' (not in DELIBERATE_DIFFERENCES)",
        'f: ours True, official <absent> (not in DELIBERATE_DIFFERENCES)']
    assert _differences(dict(a=True, b=[1, 2]), dict(a=1, b=[1, 2, 3])) == {'a': (True, 1), 'b': ([1, 2], [1, 2, 3])}
    problems = unexplained_differences(dict(device='cuda'), {}, 'stylegan2', dict(device='cpu'))
    assert "device: ours 'cuda', DELIBERATE_DIFFERENCES says 'cpu'" in problems
    assert 'trust_code: listed in DELIBERATE_DIFFERENCES (always) but equal to the official value' in problems


def test_snap_default_survives_an_exact_resume(tmp_path, recipe_files):
    """A run started without --snap saves snap=None: its exact resume keeps the config's default; --snap still wins."""
    for cfg, default in (('stylegan2', 50), ('raycond2', 100)):
        args = _command_line(cfg, VARIANTS[0], recipe_files)
        options, _ = dry_run(tmp_path / 'out', *args)
        assert options['saved_options']['snap'] is None
        assert options['image_snapshot_ticks'] == options['network_snapshot_ticks'] == default
        for saved_snap, given, expected in ((None, [], default), (50, [], 50), (None, ['--snap=3'], 3)):
            run = tmp_path / f'run-{cfg}-{saved_snap}-{len(given)}'
            os.makedirs(run)
            tiny_networks.save_snapshot(run / 'network-snapshot-000000.pkl', tiny_networks.stylegan2_generator())
            snapshots.save_training_state(str(run / 'training-state-000000.pt'),
                                          dict(options=dict(options['saved_options'], snap=saved_snap)))
            resumed, _ = dry_run(tmp_path / 'out', f'--resume={run}', *given)
            assert resumed['resume_state'] == str(run / 'training-state-000000.pt')
            assert resumed['image_snapshot_ticks'] == resumed['network_snapshot_ticks'] == expected, \
                (cfg, saved_snap, given)


def test_help_names_both_snap_defaults():
    result = CliRunner().invoke(train.main, ['--help'])
    assert result.exit_code == 0
    assert '[default: 50; 100 for the raycond configs]' in ' '.join(result.output.split())


def test_gram_adopts_the_data_cameras(tmp_path, recipe_files):
    # The test data's cameras are synthetic shapes': radius 2.7 about the origin, normalised focal 4.2647.
    ours, _ = dry_run(tmp_path / 'out', *_command_line('gram-ffhq', VARIANTS[0], recipe_files))
    assert ours['G_kwargs']['label_scale'] == pytest.approx(1 / 2.7, rel=1e-6)
    assert ours['G_kwargs']['fov'] == pytest.approx(math.degrees(2 * math.atan(1 / (2 * 4.2647))), rel=1e-6)


def test_epigraf_adopts_the_data_cameras(tmp_path, recipe_files):
    # The test data's cameras: synthetic shapes at radius 2.7 about the origin, normalised focal 4.2647. EpiGRAF's
    # ffhq_posed camera (radius 1: rays 0.88-1.12, cube 0.2, 12 degrees) is scaled to them, and mean_camera_pose is
    # the mean EpiGRAF (yaw, pitch, roll) of the labels: yaw 0 = our frontal +z, pitch from +y.
    import json
    import zipfile
    import numpy as np
    ours, _ = dry_run(tmp_path / 'out', *_command_line('epigraf', VARIANTS[0], recipe_files))
    camera = ours['G_kwargs']['cfg']['dataset']['camera']
    assert camera['radius'] == pytest.approx(2.7, rel=1e-4)
    assert (camera['ray_start'], camera['ray_end']) == pytest.approx((0.88 * 2.7, 1.12 * 2.7), rel=1e-4)
    assert ours['G_kwargs']['cfg']['dataset']['cube_scale'] == pytest.approx(0.2 * 2.7, rel=1e-4)
    assert camera['fov'] == pytest.approx(math.degrees(2 * math.atan(1 / (2 * 4.2647))), rel=1e-4)
    with zipfile.ZipFile(recipe_files[DATA]) as archive:
        labels = np.array([label for _, label in json.loads(archive.read('dataset.json'))['labels']], dtype=np.float64)
    x, y, z = labels[:, 3], labels[:, 7], labels[:, 11]
    radius = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    expected = [np.arctan2(-x, z).mean(), np.arccos(y / radius).mean(), 0.0]
    assert ours['G_kwargs']['mapping_kwargs']['mean_camera_pose'] == pytest.approx(expected, abs=1e-6)


def test_epigraf_options_are_refused_for_other_configs(tmp_path, recipe_files):
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), *_command_line('stylegan2', VARIANTS[0], recipe_files),
                                             '--patch-res=8', '--dry-run'])
    assert result.exit_code == 1
    assert 'Error: --patch-res is an option of --cfg=epigraf, not of --cfg=stylegan2; drop it.' in result.output
