"""The `--cfg` registry: what each model config sets on top of the common training options.

`build_training_options(cfg, opts)` turns the command-line options of train.py (an EasyDict with
the official option names) into the keyword arguments of `training_loop.training_loop`. Everything
every config shares is set here once; a config entry only says what differs (generator class and
its arguments, learning rate, loss terms). Adding a model means adding one function decorated with
`@register('name', modules=[...])`, naming the modules of its networks.

This is also the family registry: `network_modules()` lists every module whose classes the no-exec
pickle loader knows (importing one registers its classes with `torch_utils.persistence`), so a new
family's pickles load once its config entry names its module.
"""

import copy
import math

import dnnlib

#----------------------------------------------------------------------------

_registry = dict()
_modules = dict()  # config name -> modules of its networks

# Every config trains with the StyleGAN2 discriminator and the ADA pipeline.
_COMMON_MODULES = ('training.networks_stylegan2', 'training.augment')

def register(name, modules):
    """Decorator: make `fn(c, opts)` the config called `name`; it edits the options `c` in place.

    `modules`: the dotted names of the modules that define its networks.
    """
    def decorator(fn):
        _registry[name] = fn
        _modules[name] = tuple(modules)
        return fn
    return decorator

def config_names():
    return list(_registry)

def network_modules():
    """The modules of every config's networks, each once: what the no-exec pickle loader imports."""
    return list(dict.fromkeys(_COMMON_MODULES + sum(_modules.values(), ())))

#----------------------------------------------------------------------------
# The official configs (StyleGAN3's train.py).

@register('stylegan2', modules=['training.networks_stylegan2'])
def _stylegan2(c, opts):
    c.G_kwargs.class_name = 'training.networks_stylegan2.Generator'
    c.G_kwargs.fused_modconv_default = 'inference_only'  # speeds up training by ~10% (official)
    c.loss_kwargs.style_mixing_prob = 0.9
    c.loss_kwargs.pl_weight = 2
    c.loss_kwargs.pl_no_weight_grad = True  # the PL inner gradient needs no conv weight gradients
    c.G_reg_interval = 4
    return dict(map_depth=8, glr=0.002, snap=50)

@register('stylegan3-t', modules=['training.networks_stylegan3'])
def _stylegan3_t(c, opts):
    _stylegan3_common(c, opts)
    return dict(map_depth=2, glr=0.0025, snap=50)

@register('stylegan3-r', modules=['training.networks_stylegan3'])
def _stylegan3_r(c, opts):
    _stylegan3_common(c, opts)
    c.G_kwargs.conv_kernel = 1
    c.G_kwargs.channel_base *= 2
    c.G_kwargs.channel_max *= 2
    c.G_kwargs.use_radial_filters = True
    c.loss_kwargs.blur_init_sigma = 10  # blur D's input for the first 200k images (at batch 32); -R only (official)
    c.loss_kwargs.blur_fade_kimg = c.batch_size * 200 / 32
    return dict(map_depth=2, glr=0.0025, snap=50)

def _stylegan3_common(c, opts):
    c.G_kwargs.class_name = 'training.networks_stylegan3.Generator'
    c.G_kwargs.magnitude_ema_beta = 0.5 ** (c.batch_size / (20 * 1e3))

#----------------------------------------------------------------------------
# Ray Conditioning (Chen et al. 2023): the StyleGAN2/3 configs with camera rays in every synthesis
# layer; the mapping ignores the camera, the discriminator is conditioned on it, and the loss passes
# it to the synthesis network.

@register('raycond2', modules=['training.networks_raycond2'])
def _raycond2(c, opts):
    defaults = dict(_stylegan2(c, opts), snap=100)  # the Ray Conditioning train.py saves every 100 ticks
    _raycond_common(c, opts, 'training.networks_raycond2.Generator')
    return defaults

@register('raycond3-t', modules=['training.networks_raycond3'])
def _raycond3_t(c, opts):
    defaults = dict(_stylegan3_t(c, opts), snap=100)  # the Ray Conditioning train.py saves every 100 ticks
    _raycond_common(c, opts, 'training.networks_raycond3.Generator')
    return defaults

@register('raycond3-r', modules=['training.networks_raycond3'])
def _raycond3_r(c, opts):
    defaults = dict(_stylegan3_r(c, opts), snap=100)  # the Ray Conditioning train.py saves every 100 ticks
    _raycond_common(c, opts, 'training.networks_raycond3.Generator')
    return defaults

def _require_cameras(opts):
    problem = opts.get('camera_label_problem')  # 25-float labels that are not cameras: why (naming an image)
    if opts.cond and not opts.camera_labels and problem:
        raise ValueError(f'--cfg={opts.cfg} needs camera labels, but {problem[:1].lower() + problem[1:]}; fix the '
                         f'dataset.json of --data={opts.data}.')
    if not (opts.cond and opts.camera_labels):
        raise ValueError(f'--cfg={opts.cfg} needs camera labels: pass --cond=1 with a dataset whose dataset.json holds '
                         f'25-float cameras (e.g. dataset_tool.py --source=synthetic:shapes).')

def _raycond_common(c, opts, class_name):
    _require_cameras(opts)
    c.G_kwargs.class_name = class_name
    c.G_kwargs.legacy_rays = False  # physically correct rays; official checkpoints load with their own field
    c.loss_kwargs.class_name = 'training.loss.RayConditioningLoss'

#----------------------------------------------------------------------------
# CREPS (Nguyen et al. 2023): the bi-line generator of VinAIResearch/CREPS, its train.py's
# "if opts.cfg == 'creps':" branch: the StyleGAN2 recipe without style mixing, G's channels doubled
# (D's not), and G's precision left at the class defaults.

@register('creps', modules=['training.networks_creps'])
def _creps(c, opts):
    c.G_kwargs.class_name = 'training.networks_creps.Generator'
    c.G_kwargs.channel_base *= 2
    c.G_kwargs.channel_max *= 2
    c.loss_kwargs.pl_weight = 2
    c.G_reg_interval = 4
    # The trunk runs in float32 and the per-pixel head in float16 (on CUDA) by the class defaults; the
    # clamp is called fc_clamp. --fp32 turns it off under that name (the official --fp32 branch passes
    # conv_clamp, which the CREPS layers do not take).
    del c.G_kwargs.num_fp16_res, c.G_kwargs.conv_clamp
    if opts.fp32:
        c.G_kwargs.num_fp16_res = 0
        c.G_kwargs.fc_clamp = None
    return dict(map_depth=8, glr=0.002, snap=50)

#----------------------------------------------------------------------------
# EG3D (Chan et al. 2022): NVlabs/eg3d train.py with --cfg=ffhq|afhq|shapenet, here eg3d-ffhq|afhq|shapenet.
# The tri-plane generator renders a low-resolution raw image and features that a super-resolution
# module lifts to the dataset resolution; the dual discriminator sees both.

# EG3D's own train.py options, with their official names and defaults (train.py declares them from here).
EG3D_OPTION_DEFAULTS = dict(
    neural_rendering_resolution_initial=64, neural_rendering_resolution_final=None,
    neural_rendering_resolution_fade_kimg=1000, blur_fade_kimg=200, gen_pose_cond=False, c_scale=1, c_noise=0,
    gpc_reg_prob=0.5, gpc_reg_fade_kimg=1000, disc_c_noise=0, sr_noise_mode='none', resume_blur=False,
    sr_num_fp16_res=4, g_num_fp16_res=0, d_num_fp16_res=4, sr_first_cutoff=2, sr_first_stopband=2 ** 2.1,
    style_mixing_prob=0, sr_module=None, density_reg=0.25, density_reg_every=4, density_reg_p_dist=0.004,
    reg_type='l1', decoder_lr_mul=1)
# The ray and camera settings of EG3D's three presets (its train.py "rendering_options.update").
EG3D_RENDERING = {
    'eg3d-ffhq': dict(depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1,
                      avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2]),
    'eg3d-afhq': dict(depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1,
                      avg_camera_radius=2.7, avg_camera_pivot=[0, 0, -0.06]),
    'eg3d-shapenet': dict(depth_resolution=64, depth_resolution_importance=64, ray_start=0.1, ray_end=2.6,
                          box_warp=1.6, white_back=True, avg_camera_radius=1.7, avg_camera_pivot=[0, 0, 0]),
}
EG3D_CONFIGS = tuple(EG3D_RENDERING)

# GRAM's three configs (microsoft/GRAM configs.py) by our names; the networks' arguments are
# training.networks_gram.OFFICIAL_CONFIGS, the training recipe (its 'optimizer' and 'process' entries
# and the per-GPU batch split) is here.
GRAM_PRESETS = {'gram-ffhq': 'FFHQ_default', 'gram-cats': 'CATS_default', 'gram-carla': 'CARLA_default'}
GRAM_CONFIGS = tuple(GRAM_PRESETS)
_GRAM_FACES = dict(gen_lr=2e-5, disc_lr=2e-4, betas=(0, 0.9), grad_clip=1.0, pos_lambda=15.0)  # r1_lambda 1: --gamma=1
GRAM_RECIPES = {
    'gram-ffhq': dict(_GRAM_FACES, batch_split=4, real_pos_lambda=15.0),
    'gram-cats': dict(_GRAM_FACES, batch_split=2, real_pos_lambda=30.0),
    'gram-carla': dict(_GRAM_FACES, batch_split=4, real_pos_lambda=15.0, grad_clip=0.3, sampling_network_lr=2e-6),
}
GRAM_EMA_DECAY = 0.999  # GRAM's training_loop.py: ExponentialMovingAverage(generator.parameters(), decay=0.999)

# Options whose default differs by config (EG3D's train.py: --cond=True, --aug=noaug; GRAM always
# trains on posed images without augmentation).
_CONFIG_OPTION_DEFAULTS = {name: dict(cond=True, aug='noaug') for name in EG3D_CONFIGS + GRAM_CONFIGS}
_CONFIG_OPTION_DEFAULTS['epigraf'] = dict(cond=True, aug='ada')  # EpiGRAF: augment.mode ada, no x-flip
_OPTION_DEFAULTS = dict(cond=False, aug='ada')

def option_default(cfg, name):
    """The default of train.py option `name` (cond, aug) under --cfg=cfg."""
    return _CONFIG_OPTION_DEFAULTS.get(cfg, {}).get(name, _OPTION_DEFAULTS[name])

def _eg3d_superresolution(opts):
    if opts.get('sr_module') is not None:
        return opts.sr_module
    for resolution, name in [(128, 'SuperresolutionHybrid2X'), (256, 'SuperresolutionHybrid4X'),
                             (512, 'SuperresolutionHybrid8XDC')]:
        if opts.resolution == resolution or (resolution == 128 and opts.resolution < 128):
            return f'training.superresolution.{name}'
    raise ValueError(f'--cfg={opts.cfg} has no default super-resolution module for {opts.resolution}x{opts.resolution} '
                     f'images (EG3D has them for 128, 256 and 512); pass --sr-module.')

def _eg3d(c, opts):
    e = dnnlib.EasyDict({k: opts.get(k, v) for k, v in EG3D_OPTION_DEFAULTS.items()})
    _require_cameras(opts)
    if e.density_reg > 0 and e.reg_type != 'l1':
        raise ValueError(f'--reg_type={e.reg_type} is not supported; EG3D trains with --reg_type=l1.')
    sr_module = _eg3d_superresolution(opts)
    c.G_kwargs.class_name = 'training.networks_triplane.TriPlaneGenerator'  # official: training.triplane
    c.D_kwargs.class_name = 'training.networks_triplane.DualDiscriminator'  # official: training.dual_discriminator
    c.G_kwargs.fused_modconv_default = 'inference_only'
    c.loss_kwargs.class_name = 'training.loss.TriPlaneLoss'
    c.loss_kwargs.filter_mode = 'antialiased'
    c.D_kwargs.disc_c_noise = e.disc_c_noise
    rendering = dnnlib.EasyDict(
        image_resolution=opts.resolution, disparity_space_sampling=False, clamp_mode='softplus',
        superresolution_module=sr_module, c_gen_conditioning_zero=not e.gen_pose_cond,
        gpc_reg_prob=e.gpc_reg_prob if e.gen_pose_cond else None, c_scale=e.c_scale,
        superresolution_noise_mode=e.sr_noise_mode, density_reg=e.density_reg, density_reg_p_dist=e.density_reg_p_dist,
        reg_type=e.reg_type, decoder_lr_mul=e.decoder_lr_mul, sr_antialias=True)
    rendering.update(EG3D_RENDERING[opts.cfg])
    if e.density_reg > 0:
        c.G_reg_interval = e.density_reg_every
    c.G_kwargs.rendering_kwargs = rendering
    c.loss_kwargs.blur_init_sigma = 10
    c.loss_kwargs.blur_fade_kimg = c.batch_size * e.blur_fade_kimg / 32
    c.loss_kwargs.gpc_reg_prob = e.gpc_reg_prob if e.gen_pose_cond else None
    c.loss_kwargs.gpc_reg_fade_kimg = e.gpc_reg_fade_kimg
    c.loss_kwargs.dual_discrimination = True
    c.loss_kwargs.neural_rendering_resolution_initial = e.neural_rendering_resolution_initial
    c.loss_kwargs.neural_rendering_resolution_final = e.neural_rendering_resolution_final
    c.loss_kwargs.neural_rendering_resolution_fade_kimg = e.neural_rendering_resolution_fade_kimg
    c.G_kwargs.sr_num_fp16_res = e.sr_num_fp16_res
    c.G_kwargs.sr_kwargs = dnnlib.EasyDict(channel_base=opts.cbase, channel_max=opts.cmax,
                                           fused_modconv_default='inference_only')
    c.loss_kwargs.style_mixing_prob = e.style_mixing_prob
    # Precision: EG3D's --g_num_fp16_res / --d_num_fp16_res / --sr_num_fp16_res; our --fp32 zeroes all three.
    g_fp16, d_fp16 = (0, 0) if opts.fp32 else (e.g_num_fp16_res, e.d_num_fp16_res)
    if opts.fp32:
        c.G_kwargs.sr_num_fp16_res = 0
    c.G_kwargs.num_fp16_res = g_fp16
    c.G_kwargs.conv_clamp = 256 if g_fp16 > 0 else None
    c.D_kwargs.num_fp16_res = d_fp16
    c.D_kwargs.conv_clamp = 256 if d_fp16 > 0 else None
    return dict(map_depth=2, glr=0.0025, snap=50)

for _name in EG3D_RENDERING:
    register(_name, modules=['training.networks_triplane'])(_eg3d)

#----------------------------------------------------------------------------
# GRAM (Deng et al. 2022): microsoft/GRAM's configs.py (FFHQ_default, CATS_default, CARLA_default) and
# processes.py (Gan3DProcess) in our loop. GRAM's D has no minibatch-std layer and sees no label; --gamma
# is its r1_lambda (1). GRAM's layout, 4 images per GPU (CATS 2) split into batch_split chunks for G, is
# --batch=32 --batch-gpu=1 on 8 GPUs (CATS --batch=16); D's loss is a per-image mean, so its chunks change
# nothing. GRAM's torch.cuda.amp autocast and GradScaler are the loop's `amp` (CUDA only; --fp32 turns
# it off). Not reproduced: its step order (D, then G; ours G, then D, in every config).

def has_minibatch_std(cfg):
    """Whether the discriminator of --cfg=cfg compares images in --mbstd-group groups (train.py checks --batch-gpu)."""
    return cfg not in GRAM_CONFIGS

def cameras_focal(fov_degrees):
    """GRAM's normalised focal length of its fov (training.cameras.gram_focal; no torch import here)."""
    return 1 / (2 * math.tan(math.radians(fov_degrees) / 2))

def _gram(c, opts):
    from training.networks_gram import OFFICIAL_CONFIGS  # imported late: the registry itself needs no torch
    _require_cameras(opts)
    if opts.get('map_depth') is not None or opts.get('freezed'):
        option = '--map-depth' if opts.get('map_depth') is not None else '--freezed'
        raise ValueError(f'{option} does not apply to --cfg={opts.cfg}: GRAM\'s networks have a fixed mapping depth and '
                         f'no layers to freeze; drop it.')
    preset, recipe = copy.deepcopy(OFFICIAL_CONFIGS[GRAM_PRESETS[opts.cfg]]), GRAM_RECIPES[opts.cfg]
    # The networks at the dataset's resolution (GRAM resizes its images to img_size instead).
    c.G_kwargs = dnnlib.EasyDict(class_name='training.networks_gram.GramGenerator', **preset['generator'],
                                 **preset['camera'])
    c.G_kwargs.img_size = opts.resolution
    # GRAM's world has its cameras at radius 1 with the preset's fov; data with other cameras (EG3D-style
    # labels at radius 2.7, focal 4.2647) keep their images: the labels are scaled into GRAM's units and
    # the fakes' cameras take the data's field of view.
    radius, focal = opts.get('camera_radius'), opts.get('camera_focal')
    if radius is not None and abs(radius - 1) > 1e-3:
        c.G_kwargs.label_scale = 1 / radius
    if focal is not None and abs(focal - cameras_focal(c.G_kwargs.fov)) > 1e-3 * focal:
        c.G_kwargs.fov = math.degrees(2 * math.atan(1 / (2 * focal)))
    c.D_kwargs = dnnlib.EasyDict(class_name='training.networks_gram.GramDiscriminator', img_size=opts.resolution)
    # "torch.optim.Adam(param_groups, lr=gen_lr, betas=betas)", D alike with disc_lr (torch's eps 1e-8).
    c.G_opt_kwargs.betas = [float(beta) for beta in recipe['betas']]
    c.D_opt_kwargs.betas = [float(beta) for beta in recipe['betas']]
    if 'sampling_network_lr' in recipe:  # set_optimizer_G: the manifold predictor's own learning rate
        c.G_opt_kwargs.param_groups = [dict(prefix='representation.sample_network', lr=recipe['sampling_network_lr'])]
    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.GramLoss', r1_gamma=opts.gamma,
                                    pos_lambda=recipe['pos_lambda'], real_pos_lambda=recipe['real_pos_lambda'])
    if opts.get('patch_split') is not None:  # GRAM's --patch_split (default None: whole images)
        c.loss_kwargs.patch_split = opts.patch_split
    c.D_reg_interval = None  # R1 in every D step, in the same pass (r1_interval=1)
    c.G_reg_interval = None
    # torch_ema with decay 0.999 per G step: 0.5 ** (batch / ema_nimg) = 0.999, its warm-up, no ramp-up.
    c.ema_kimg = c.batch_size * math.log(0.5) / math.log(GRAM_EMA_DECAY) / 1000
    c.ema_rampup = None
    c.ema_warmup = True
    # "nn.utils.clip_grad_norm_(..., grad_clip)" after each network's backward. GRAM's G gradient is the
    # sum over its batch_split chunks of each chunk's mean (D's is one batch mean), batch_split times the
    # batch mean our loop clips: the same clip of the mean is grad_clip / batch_split.
    c.grad_clip = dict(G=recipe['grad_clip'] / recipe['batch_split'], D=recipe['grad_clip'])
    c.amp = not opts.fp32  # "with torch.cuda.amp.autocast()" and one GradScaler for both networks
    return dict(map_depth=None, glr=recipe['gen_lr'], dlr=recipe['disc_lr'], snap=50)

for _name in GRAM_CONFIGS:
    register(_name, modules=['training.networks_gram'])(_gram)

#----------------------------------------------------------------------------
# EpiGRAF (Skorokhodov et al. 2022): universome/epigraf's composed Hydra config (model=epigraf,
# training=patch_beta, dataset=ffhq_posed) as --cfg=epigraf. The tri-plane generator renders 64 x 64
# patches of the full-resolution image straight to pixels; the patch-aware D sees them with their
# (scale, offset). Its options keep EpiGRAF's meaning under hyphenated names (train.py declares them).

EPIGRAF_OPTION_DEFAULTS = dict(
    triplane_res=512, triplane_channels=32, patch_res=64, patch_dist='beta', patch_anneal_kimg=10000,
    ray_steps=48, camera_cond_g=False, camera_cond_d=True, camera_cond_d_drop_p=0.5, camera_cond_g_drop_p=0.0,
    nerf_noise_kimg=5000, bg_model='none', fov=None, ray_start=None, ray_end=None, cube_scale=None, white_back=False)
# dataset=ffhq_posed's camera, for cameras at radius 1 (None above: these, scaled to the data's median radius,
# and the fov of the data's focal, so that EG3D-style labels at radius 2.7 train as they are).
EPIGRAF_CAMERA = dict(fov=12.0, ray_start=0.88, ray_end=1.12, cube_scale=0.2)
EPIGRAF_DISCRETE_SUPPORT = [0.25, 1.0]  # training/patch_discrete_uniform.yaml
EPIGRAF_EMA_MULTIPLIER = 0.3125  # model.generator.ema_multiplier (kept in the config; train.py's ema_kimg is batch * 10 / 32)
# model.generator.bg_model of configs/model/epigraf.yaml (its type from --bg-model: null, 'plane' or 'sphere').
EPIGRAF_BG_MODEL = dict(type=None, output_channels=4, coord_dim=4, num_blocks=2, cbase=32768, cmax=128,
                        num_fp16_blocks=0, fmm=dict(enabled=False, rank=3, activation='demod'), posenc_period_len=64.0,
                        num_steps=8, start=1.0)

def _epigraf_patch(e, opts):
    """training.patch of the composed config (training=patch_beta, or the --patch-dist one)."""
    enabled = e.patch_dist != 'none'
    resolution = e.patch_res if enabled else opts.resolution
    patch = dnnlib.EasyDict(enabled=enabled, patch_params_cond=enabled, min_scale_trg=resolution / opts.resolution,
                            max_scale=1.0, anneal_kimg=e.patch_anneal_kimg, resolution=resolution,
                            mbstd_group_size=opts.mbstd_group, distribution=e.patch_dist if enabled else 'beta',
                            alpha=1.0, beta_val_start=0.001, beta_val_end=0.8)
    if e.patch_dist == 'discrete_uniform':
        patch.discrete_support = list(EPIGRAF_DISCRETE_SUPPORT)
    return patch

def _epigraf(c, opts):
    e = dnnlib.EasyDict({k: opts.get(k) if opts.get(k) is not None else v for k, v in EPIGRAF_OPTION_DEFAULTS.items()})
    _require_cameras(opts)
    if opts.get('freezed'):
        raise ValueError('--freezed does not apply to --cfg=epigraf here; drop it.')
    if e.patch_dist != 'none' and (e.patch_res > opts.resolution or opts.resolution % e.patch_res):
        raise ValueError(f'--patch-res={e.patch_res} must divide the {opts.resolution}x{opts.resolution} images '
                         f'(EpiGRAF trains on 64 x 64 patches); pass a smaller --patch-res or --patch-dist=none.')
    patch = _epigraf_patch(e, opts)
    radius, focal = opts.get('camera_radius') or 1.0, opts.get('camera_focal')
    for name in ('ray_start', 'ray_end', 'cube_scale'):
        if e[name] is None:
            e[name] = EPIGRAF_CAMERA[name] * radius
    if e.fov is None:
        e.fov = math.degrees(2 * math.atan(1 / (2 * focal))) if focal else EPIGRAF_CAMERA['fov']
    # configs/model/epigraf.yaml model.generator, with the dataset and training.patch it interpolates.
    dataset = dnnlib.EasyDict(path=opts.data, c_dim=0, camera=dnnlib.EasyDict(
        fov=e.fov, ray_start=e.ray_start, ray_end=e.ray_end, radius=radius, dist='custom'), resolution=opts.resolution,
        cube_scale=e.cube_scale, white_back=e.white_back, last_back=False)
    G_cfg = dnnlib.EasyDict(
        fmaps=1.0, cmax=opts.cmax, cbase=opts.cbase, optim=dnnlib.EasyDict(lr=0.0025, betas=[0.0, 0.99]), patch=patch,
        dataset=dataset, w_dim=512, camera_cond=e.camera_cond_g, camera_cond_drop_p=e.camera_cond_g_drop_p,
        camera_cond_noise_std=0.0, camera_cond_spoof_p=0.5, map_depth=2, ema_multiplier=EPIGRAF_EMA_MULTIPLIER,
        backbone='stylegan2', num_ray_steps=e.ray_steps, clamp_mode='softplus', nerf_noise_std_init=1.0,
        nerf_noise_kimg_growth=e.nerf_noise_kimg, density_shift=0.0, use_noise=True,
        tri_plane=dnnlib.EasyDict(res=e.triplane_res, feat_dim=e.triplane_channels, fp32=True, has_view_cond=False,
                                  posenc_period_len=0, mlp=dnnlib.EasyDict(n_layers=2, hid_dim=64)),
        bg_model=dict(copy.deepcopy(EPIGRAF_BG_MODEL), type=None if e.bg_model == 'none' else e.bg_model))
    c.G_kwargs.class_name = 'training.networks_epigraf.Generator'
    c.G_kwargs.cfg = G_cfg
    c.G_kwargs.fused_modconv_default = 'inference_only'
    c.G_kwargs.mapping_kwargs.update(camera_cond=e.camera_cond_g, camera_cond_drop_p=e.camera_cond_g_drop_p,
                                     camera_cond_noise_std=0.0)
    c.G_kwargs.mapping_kwargs.mean_camera_pose = list(opts.get('camera_mean_angles') or (0.0, math.pi / 2, 0.0))
    del c.G_kwargs.num_fp16_res, c.G_kwargs.conv_clamp  # the tri-plane decoder is float32 (tri_plane.fp32)
    # configs/model/epigraf.yaml model.discriminator (fmaps 0.5: channel_base = cbase / 2).
    c.D_kwargs.class_name = 'training.networks_epigraf.Discriminator'
    c.D_kwargs.cfg = dnnlib.EasyDict(
        fmaps=0.5, cmax=opts.cmax, cbase=opts.cbase, patch=copy.deepcopy(patch),
        num_additional_start_blocks=int(round(math.log2(opts.resolution / patch.resolution))),
        mbstd_group_size=opts.mbstd_group, camera_cond=e.camera_cond_d, camera_cond_drop_p=e.camera_cond_d_drop_p,
        camera_cond_noise_std=0.0, camera_cond_raw=False, hyper_mod=patch.enabled,
        optim=dnnlib.EasyDict(lr=0.002, betas=[0.0, 0.99]))
    c.D_kwargs.patch_resolution = patch.resolution  # our loop passes the dataset's img_resolution
    c.D_kwargs.channel_base = opts.cbase // 2
    c.loss_kwargs.class_name = 'training.loss.EpiGRAFLoss'
    c.loss_kwargs.patch_kwargs = copy.deepcopy(patch)
    c.loss_kwargs.camera_cond_spoof_p = G_cfg.camera_cond_spoof_p
    c.loss_kwargs.blur_init_sigma = 10  # model.loss_kwargs
    c.loss_kwargs.blur_fade_kimg = 200
    c.G_reg_interval = None  # no path-length term (pl_weight 0): Gall in every step (EpiGRAF spells it 0)
    c.D_reg_interval = 16 if opts.gamma > 0 else None  # EpiGRAF's train.py; ema_kimg stays batch * 10 / 32
    return dict(map_depth=2, glr=0.0025, dlr=0.002, snap=50)

register('epigraf', modules=['training.networks_epigraf', 'training.networks_inr_gan'])(_epigraf)

#----------------------------------------------------------------------------

def build_training_options(opts):
    """Return the EasyDict of `training_loop` keyword arguments for the validated train.py `opts`.

    `opts` carries: cfg, data (path), cond, mirror, mirror_cameras, aug, p, target, batch, gpus,
    batch_gpu, gamma, cbase, cmax, glr, dlr (None: the config's default), map_depth, mbstd_group, freezed, fp32, kimg, tick,
    snap (None: the config's default), seed, workers, nobench, metrics, metric_detectors (optional), device,
    and the dataset facts `resolution`,
    `camera_labels` (whether the labels are 25-float cameras), `camera_label_problem` (optional: why 25-float
    labels are not cameras), `camera_radius` and `camera_focal` (optional: the median camera distance from
    the world origin and normalised focal of camera labels) and `dataset_size`.
    """
    if opts.cfg not in _registry:
        raise ValueError(f'Unknown --cfg={opts.cfg!r}; choose one of {", ".join(_registry)}.')
    c = dnnlib.EasyDict()
    c.training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=opts.data,
                                            use_labels=bool(opts.cond), max_size=opts.dataset_size,
                                            xflip=bool(opts.mirror), xflip_camera_labels=bool(opts.mirror_cameras),
                                            resolution=opts.resolution, random_seed=opts.seed)
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=opts.device == 'cuda', prefetch_factor=2,
                                           num_workers=opts.workers)
    c.G_kwargs = dnnlib.EasyDict(class_name=None, z_dim=512, w_dim=512, mapping_kwargs=dnnlib.EasyDict())
    c.D_kwargs = dnnlib.EasyDict(class_name='training.networks_stylegan2.Discriminator', block_kwargs=dnnlib.EasyDict(),
                                 mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict())
    c.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0.0, 0.99], eps=1e-8)
    c.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0.0, 0.99], eps=1e-8)
    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=opts.gamma)

    c.num_gpus = opts.gpus
    c.batch_size = opts.batch
    c.batch_gpu = opts.batch_gpu or opts.batch // opts.gpus
    c.G_kwargs.channel_base = c.D_kwargs.channel_base = opts.cbase
    c.G_kwargs.channel_max = c.D_kwargs.channel_max = opts.cmax
    c.D_kwargs.block_kwargs.freeze_layers = opts.freezed
    c.D_kwargs.epilogue_kwargs.mbstd_group_size = opts.mbstd_group
    c.metrics = list(opts.metrics)
    c.metric_detectors = dict(opts.get('metric_detectors') or {})
    c.total_kimg = opts.kimg
    c.kimg_per_tick = opts.tick
    c.random_seed = opts.seed
    c.ema_kimg = c.batch_size * 10 / 32
    c.device = opts.device
    c.cudnn_benchmark = not opts.nobench

    # fp16 on the 4 highest resolutions (CUDA only; the networks run fp32 on the CPU anyway); a config
    # whose generator has other precision arguments replaces these.
    c.G_kwargs.num_fp16_res = c.D_kwargs.num_fp16_res = 0 if opts.fp32 else 4
    c.G_kwargs.conv_clamp = c.D_kwargs.conv_clamp = None if opts.fp32 else 256

    defaults = _registry[opts.cfg](c, opts)
    if opts.camera_labels:
        # Deliberate (not in the official train.py): the generator declares that its label is a camera,
        # instead of the code around it guessing from c_dim == 25 (training.capabilities).
        c.G_kwargs.label_kind = 'camera'
    if 'mapping_kwargs' in c.G_kwargs:
        c.G_kwargs.mapping_kwargs.num_layers = opts.map_depth if opts.map_depth is not None else defaults['map_depth']
    c.G_opt_kwargs.lr = opts.glr if opts.glr is not None else defaults['glr']
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap if opts.snap is not None else defaults['snap']
    c.D_opt_kwargs.lr = opts.dlr if opts.get('dlr') is not None else defaults.get('dlr', 0.002)

    if opts.aug != 'noaug':
        # Camera-labelled data gets colour augmentation only: geometric ones would break image-pose pairs.
        preset = 'color' if opts.camera_labels else 'bgc'
        c.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', **augpipe_spec(preset))
        if opts.aug == 'ada':
            c.ada_target = opts.target
        else:
            c.augment_p = opts.p
    return c

def augpipe_spec(preset):
    """The AugmentPipe probability multipliers of a named preset."""
    from training import augment  # imported late: the registry itself needs no torch
    return dict(augment.augpipe_specs[preset])

#----------------------------------------------------------------------------
