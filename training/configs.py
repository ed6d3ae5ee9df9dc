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

def _raycond_common(c, opts, class_name):
    problem = opts.get('camera_label_problem')  # 25-float labels that are not cameras: why (naming an image)
    if opts.cond and not opts.camera_labels and problem:
        raise ValueError(f'--cfg={opts.cfg} needs camera labels, but {problem[:1].lower() + problem[1:]}; fix the '
                         f'dataset.json of --data={opts.data}.')
    if not (opts.cond and opts.camera_labels):
        raise ValueError(f'--cfg={opts.cfg} needs camera labels: pass --cond=1 with a dataset whose dataset.json holds '
                         f'25-float cameras (e.g. dataset_tool.py --source=synthetic:shapes).')
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

def build_training_options(opts):
    """Return the EasyDict of `training_loop` keyword arguments for the validated train.py `opts`.

    `opts` carries: cfg, data (path), cond, mirror, mirror_cameras, aug, p, target, batch, gpus,
    batch_gpu, gamma, cbase, cmax, glr, dlr, map_depth, mbstd_group, freezed, fp32, kimg, tick,
    snap (None: the config's default), seed, workers, nobench, metrics, metric_detectors (optional), device,
    and the dataset facts `resolution`,
    `camera_labels` (whether the labels are 25-float cameras), `camera_label_problem` (optional: why 25-float
    labels are not cameras) and `dataset_size`.
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
    c.G_kwargs.mapping_kwargs.num_layers = opts.map_depth if opts.map_depth is not None else defaults['map_depth']
    c.G_opt_kwargs.lr = opts.glr if opts.glr is not None else defaults['glr']
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap if opts.snap is not None else defaults['snap']
    c.D_opt_kwargs.lr = opts.dlr

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
