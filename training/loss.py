"""GAN losses: the StyleGAN2 loss that every config uses, with hooks for the terms some configs add.

`StyleGAN2Loss` follows the official StyleGAN2-ADA / StyleGAN3 loss (the official StyleGAN3
repository's training/loss.py): non-saturating logistic loss, lazy R1 on reals, path-length
regularisation, style mixing and a Gaussian blur of every discriminator input that fades out over the first `blur_fade_kimg`.

The training loop calls `accumulate_gradients(phase, ...)` once per phase and batch chunk; the
phase names and the rule that a regularisation phase with weight 0 does nothing are as official:

    phase   runs                                         no-op / collapse when
    Gmain   softplus(-D(G(z)))                           -
    Greg    path-length penalty (+ extra 'reg' G terms)   pl_weight == 0: Greg -> nothing, Gboth -> Gmain
    Dmain   softplus(D(G(z))) + softplus(-D(x))          -
    Dreg    R1 penalty on reals (+ extra 'reg' D terms)   r1_gamma == 0: Dreg -> nothing, Dboth -> Dmain
    Gboth / Dboth  main and regularisation in one pass

Extending (ray-conditioned, tri-plane, patch-wise, GRAM configs) is done by subclassing and overriding
only what changes, never by copying this class:
  * `run_synthesis(ws, c, update_emas)` — e.g. pass the camera to a ray-conditioned synthesis;
  * `run_G(z, c, update_emas)` / `run_D(img, c, blur_sigma, update_emas)` — whole G or D pass;
  * `detach_real(real_img, requires_grad)` / `r1_penalty(real_img, real_logits)` — e.g. a dict of
    images with a dual R1 over both;
  * `extra_G_terms(stage, ctx)` / `extra_D_terms(stage, ctx)` — return `{name: loss}` with per-sample
    ([N] or [N, 1]) or scalar tensors. Each is averaged, added to the loss of its stage before the
    backward (so it is scaled by `gain` like the rest), kept in `last_losses[name]` and reported
    as `Loss/<name>`. G stages: 'main' (in Gmain/Gboth), 'reg' (in Greg/Gboth). D stages: 'gen' and
    'real' (in Dmain/Dboth), 'reg' (in Dreg/Dboth). `ctx` is a SimpleNamespace holding `phase`,
    `cur_nimg`, `blur_sigma` and the tensors of that stage (see `accumulate_gradients`). The hooks
    must return the same names in the same order in every process, because reporting is collective;
  * `G_reg_enabled` / `D_reg_enabled` — override to keep Greg/Dreg alive when a subclass adds
    regularisation terms while pl_weight or r1_gamma is 0.

Non-finite losses: `last_losses` maps name -> detached loss tensor ('Gmain', 'Gpl', 'Dgen', 'Dreal',
'Dr1' and the extra-term names) for the losses of the latest `accumulate_gradients` call only (it is
cleared at the start of each call), so a loop that folds `torch.isfinite` of its values into a
device-side flag after every call attributes a NaN to the right phase without any host sync. In
addition, a "finite so far" flag per phase and name is kept on the device; `nonfinite_terms()` reads
those flags once (one sync), resets them and returns `<phase>/<name>` of those that were ever non-finite.
"""

import contextlib
import math
import types

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import upfirdn2d
from training import cameras
from training import patches
from training.mixed_precision import MixedPrecision
from training.networks_triplane import filtered_resizing

_PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')

# ----------------------------------------------------------------------------------------------


class Loss:
    """Interface the training loop relies on."""

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        """Run one training phase on one batch chunk and add its gradients (scaled by `gain`) to .grad."""
        raise NotImplementedError()

# ----------------------------------------------------------------------------------------------


def blur_filter(blur_sigma, device=None, dtype=torch.float32):
    """1-D Gaussian taps for the D-input blur, normalised to sum 1; None when the blur is off.

    Half-size floor(3 sigma), taps proportional to 2^-(x/sigma)^2 (the official base-2 Gaussian).
    Used as a separable filter by `upfirdn2d.filter2d`.
    """
    blur_size = int(np.floor(blur_sigma * 3))
    if blur_size <= 0:
        return None
    f = torch.arange(-blur_size, blur_size + 1, device=device, dtype=dtype).div(blur_sigma).square().neg().exp2()
    return f / f.sum()


def blur(img, blur_sigma):
    """Gaussian blur of an NCHW batch with zero padding; the identity when `blur_filter` is None."""
    f = blur_filter(blur_sigma, device=img.device, dtype=torch.promote_types(img.dtype, torch.float32))
    if f is None:
        return img
    return upfirdn2d.filter2d(img, f)

# ----------------------------------------------------------------------------------------------


class StyleGAN2Loss(Loss):
    """Official StyleGAN2 loss; the constructor arguments are the official ones (see module docstring)."""

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=10, style_mixing_prob=0, pl_weight=0,
                 pl_batch_shrink=2, pl_decay=0.01, pl_no_weight_grad=False, blur_init_sigma=0, blur_fade_kimg=0):
        super().__init__()
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_no_weight_grad = pl_no_weight_grad
        self.pl_mean = torch.zeros([], device=device)  # running mean of the path lengths (exact resume needs it)
        self.blur_init_sigma = blur_init_sigma
        self.blur_fade_kimg = blur_fade_kimg
        self.last_losses = dict()   # name -> detached loss tensor of the latest accumulate_gradients call
        self._all_finite = dict()   # name -> bool tensor on the loss device, since the last nonfinite_terms()
        # The loop's autocast and loss scale (training.mixed_precision); the loop passes gain * scale.
        self.mixed_precision = MixedPrecision(device, enabled=False)

    def forward_scope(self, name):
        """The context of a forward pass: its profiler label and the loop's autocast (if any)."""
        scope = contextlib.ExitStack()
        scope.enter_context(torch.autograd.profiler.record_function(name))
        scope.enter_context(self.mixed_precision.autocast())
        return scope

    # -- state for exact resume ----------------------------------------------------------------

    def state_dict(self):
        return {'pl_mean': self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state):
        if set(state.keys()) != {'pl_mean'}:
            raise KeyError(f'StyleGAN2Loss state must have exactly the key "pl_mean", got {sorted(state.keys())}.')
        self.pl_mean.copy_(torch.as_tensor(state['pl_mean']))

    # -- overridable pieces --------------------------------------------------------------------

    @property
    def G_reg_enabled(self):
        return self.pl_weight != 0

    @property
    def D_reg_enabled(self):
        return self.r1_gamma != 0

    def blur_sigma(self, cur_nimg):
        """D-input blur sigma at `cur_nimg`: fades linearly from blur_init_sigma to 0 over blur_fade_kimg."""
        if self.blur_fade_kimg > 0:
            return max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0) * self.blur_init_sigma
        return 0

    def run_synthesis(self, ws, c, update_emas=False):
        _ = c  # StyleGAN2/3 synthesis ignores the label; ray-conditioned subclasses pass the camera here.
        return self.G.synthesis(ws, update_emas=update_emas)

    def run_G(self, z, c, update_emas=False):
        """-> (img, ws). With probability style_mixing_prob (per batch), ws[:, cutoff:] come from a second z."""
        ws = self.mix_styles(self.G.mapping(z, c, update_emas=update_emas), z, c)
        img = self.run_synthesis(ws, c, update_emas=update_emas)
        return img, ws

    def mix_styles(self, ws, z, c):
        """With probability style_mixing_prob (per batch), ws[:, cutoff:] from the mapping of a second z."""
        num_ws = ws.shape[1]
        if self.style_mixing_prob > 0 and num_ws > 1:
            with torch.autograd.profiler.record_function('style_mixing'):
                cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
                cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob,
                                     cutoff, torch.full_like(cutoff, num_ws))
                ws[:, cutoff:] = self.G.mapping(torch.randn_like(z), c, update_emas=False)[:, cutoff:]
        return ws

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        """Blur, then augment, then D; the same path for reals and fakes."""
        return self.D(self.D_input(img, blur_sigma), c, update_emas=update_emas)

    def D_input(self, img, blur_sigma=0):
        """What D sees of `img`: blurred (while the blur lasts), then augmented."""
        if blur_sigma > 0:
            with torch.autograd.profiler.record_function('blur'):
                img = blur(img, blur_sigma)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return img

    def detach_real(self, real_img, requires_grad):
        """The real batch as a leaf for the D pass (requiring grad for R1)."""
        return real_img.detach().requires_grad_(requires_grad)

    def r1_penalty(self, real_img, real_logits):
        """Per-image squared norm of d(sum of logits)/d(real_img), real_img being the input of run_D."""
        with torch.autograd.profiler.record_function('r1_grads'), conv2d_gradfix.no_weight_gradients():
            r1_grads = self.mixed_precision.input_grads(real_logits.sum(), [real_img], create_graph=True,
                                                        only_inputs=True)[0]
        return r1_grads.square().sum([1, 2, 3])

    def extra_G_terms(self, stage, ctx):
        """Additional generator losses for `stage` ('main' or 'reg'); see the module docstring."""
        return {}

    def extra_D_terms(self, stage, ctx):
        """Additional discriminator losses for `stage` ('gen', 'real' or 'reg'); see the module docstring."""
        return {}

    # -- non-finite detection ------------------------------------------------------------------

    def nonfinite_terms(self, reset=True):
        """`<phase>/<loss name>` of each loss that had a non-finite value since the last call (one host sync)."""
        flags = self._all_finite
        if reset:
            self._all_finite = dict()
        if len(flags) == 0:
            return []
        finite = torch.stack([flag.to(self.pl_mean.device) for flag in flags.values()]).cpu().tolist()
        return [name for name, ok in zip(flags.keys(), finite) if not ok]

    def _keep(self, name, loss):
        loss = loss.detach()
        self.last_losses[name] = loss
        finite = torch.isfinite(loss).all()
        key = f'{self._phase}/{name}'
        previous = self._all_finite.get(key)
        self._all_finite[key] = finite if previous is None else previous & finite.to(previous.device)

    def _extra_terms(self, terms):
        """Report and keep the extra terms; return the sum of their means (0 when there are none)."""
        total = 0
        for name, loss in terms.items():
            training_stats.report(f'Loss/{name}', loss)
            self._keep(name, loss)
            total = total + loss.mean()
        return total

    # -- the phases ----------------------------------------------------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if phase not in _PHASES:
            raise ValueError(f'Unknown loss phase "{phase}"; expected one of {", ".join(_PHASES)}.')
        self._phase = phase  # as the caller named it, for nonfinite_terms()
        if not self.G_reg_enabled:
            phase = {'Greg': 'none', 'Gboth': 'Gmain'}.get(phase, phase)
        if not self.D_reg_enabled:
            phase = {'Dreg': 'none', 'Dboth': 'Dmain'}.get(phase, phase)
        self.last_losses = dict()
        blur_sigma = self.blur_sigma(cur_nimg)
        ctx = dict(phase=phase, cur_nimg=cur_nimg, blur_sigma=blur_sigma)

        if phase in ('Gmain', 'Gboth'):
            self._G_main(gen_z, gen_c, gain, ctx)
        if phase in ('Greg', 'Gboth'):
            self._G_reg(gen_z, gen_c, gain, ctx)
        loss_Dgen = None
        if phase in ('Dmain', 'Dboth'):
            loss_Dgen = self._D_gen(gen_z, gen_c, gain, ctx)
        if phase in ('Dmain', 'Dreg', 'Dboth'):
            self._D_real(phase, real_img, real_c, gain, ctx, loss_Dgen)

    def _G_main(self, gen_z, gen_c, gain, ctx):
        """Maximise the logits of fakes: softplus(-D(G(z)))."""
        with self.forward_scope('Gmain_forward'):
            gen_img, gen_ws = self.run_G(gen_z, gen_c)
            loss = self._G_main_loss(gen_img, gen_ws, gen_z, gen_c, ctx)
        with torch.autograd.profiler.record_function('Gmain_backward'):
            loss.mul(gain).backward()

    def _G_main_loss(self, gen_img, gen_ws, gen_z, gen_c, ctx):
        """The scalar Gmain loss of the fakes gen_img (reported and kept), extra 'main' terms included."""
        gen_logits = self.run_D(gen_img, gen_c, blur_sigma=ctx['blur_sigma'])
        training_stats.report('Loss/scores/fake', gen_logits)
        training_stats.report('Loss/signs/fake', gen_logits.sign())
        loss_Gmain = torch.nn.functional.softplus(-gen_logits)
        training_stats.report('Loss/G/loss', loss_Gmain)
        self._keep('Gmain', loss_Gmain)
        extra = self._extra_terms(self.extra_G_terms('main', types.SimpleNamespace(
            **ctx, gen_z=gen_z, gen_c=gen_c, gen_img=gen_img, gen_ws=gen_ws, gen_logits=gen_logits)))
        return loss_Gmain.mean() + extra

    def _G_reg(self, gen_z, gen_c, gain, ctx):
        """Path-length regularisation on a shrunk batch (plus any extra 'reg' terms)."""
        loss = 0
        with self.forward_scope('Gpl_forward'):
            if self.pl_weight != 0:
                loss = self._path_length_loss(gen_z, gen_c).mean()
            loss = loss + self._extra_terms(self.extra_G_terms('reg', types.SimpleNamespace(
                **ctx, gen_z=gen_z, gen_c=gen_c)))
        if isinstance(loss, torch.Tensor):
            with torch.autograd.profiler.record_function('Gpl_backward'):
                loss.mul(gain).backward()

    def _path_length_loss(self, gen_z, gen_c):
        batch_size = gen_z.shape[0] // self.pl_batch_shrink
        gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size])
        pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
        with torch.autograd.profiler.record_function('pl_grads'), \
                conv2d_gradfix.no_weight_gradients(self.pl_no_weight_grad):
            pl_grads = self.mixed_precision.input_grads((gen_img * pl_noise).sum(), [gen_ws], create_graph=True,
                                                        only_inputs=True)[0]
        pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
        # As official, the penalty uses the updated mean without detaching it.
        pl_mean = self.pl_mean.to(pl_lengths.dtype).lerp(pl_lengths.mean(), self.pl_decay)
        self.pl_mean.copy_(pl_mean.detach())
        pl_penalty = (pl_lengths - pl_mean).square()
        training_stats.report('Loss/pl_penalty', pl_penalty)
        loss_Gpl = pl_penalty * self.pl_weight
        training_stats.report('Loss/G/reg', loss_Gpl)
        self._keep('Gpl', loss_Gpl)
        return loss_Gpl

    def _D_gen(self, gen_z, gen_c, gain, ctx):
        """Minimise the logits of fakes: softplus(D(G(z))), generated with update_emas=True."""
        with self.forward_scope('Dgen_forward'):
            gen_img, _gen_ws = self.run_G(gen_z, gen_c, update_emas=True)
            gen_logits = self.run_D(gen_img, gen_c, blur_sigma=ctx['blur_sigma'], update_emas=True)
            training_stats.report('Loss/scores/fake', gen_logits)
            training_stats.report('Loss/signs/fake', gen_logits.sign())
            loss_Dgen = torch.nn.functional.softplus(gen_logits)
            self._keep('Dgen', loss_Dgen)
            extra = self._extra_terms(self.extra_D_terms('gen', types.SimpleNamespace(
                **ctx, gen_z=gen_z, gen_c=gen_c, gen_img=gen_img, gen_logits=gen_logits)))
        with torch.autograd.profiler.record_function('Dgen_backward'):
            (loss_Dgen.mean() + extra).mul(gain).backward()
        return loss_Dgen.detach()  # reported together with the real part, as official

    def _D_real(self, phase, real_img, real_c, gain, ctx, loss_Dgen):
        """Maximise the logits of reals (Dmain) and/or penalise their input gradient (Dreg)."""
        main, reg = phase in ('Dmain', 'Dboth'), phase in ('Dreg', 'Dboth')
        name = {'Dmain': 'Dreal', 'Dreg': 'Dr1', 'Dboth': 'Dreal_Dr1'}[phase]
        with self.forward_scope(name + '_forward'):
            real_img_tmp = self.detach_real(real_img, requires_grad=reg)
            real_logits = self.run_D(real_img_tmp, real_c, blur_sigma=ctx['blur_sigma'])
            training_stats.report('Loss/scores/real', real_logits)
            training_stats.report('Loss/signs/real', real_logits.sign())
            stage_ctx = types.SimpleNamespace(**ctx, real_img=real_img_tmp, real_c=real_c, real_logits=real_logits)

            loss_Dreal = 0
            extra = 0
            if main:
                loss_Dreal = torch.nn.functional.softplus(-real_logits)
                training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
                self._keep('Dreal', loss_Dreal)
                extra = extra + self._extra_terms(self.extra_D_terms('real', stage_ctx))

            loss_Dr1 = 0
            if reg:
                if self.r1_gamma != 0:
                    r1_penalty = self.r1_penalty(real_img_tmp, real_logits)
                    loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                    training_stats.report('Loss/r1_penalty', r1_penalty)
                    training_stats.report('Loss/D/reg', loss_Dr1)
                    self._keep('Dr1', loss_Dr1)
                extra = extra + self._extra_terms(self.extra_D_terms('reg', stage_ctx))

            loss = loss_Dreal + loss_Dr1
            loss = (loss.mean() if isinstance(loss, torch.Tensor) else loss) + extra
        if isinstance(loss, torch.Tensor):  # only a subclass that enables Dreg with r1_gamma=0 and no terms has none
            with torch.autograd.profiler.record_function(name + '_backward'):
                loss.mul(gain).backward()


class RayConditioningLoss(StyleGAN2Loss):
    """StyleGAN2Loss whose synthesis receives the camera label: ray-conditioned generators render its rays."""

    def run_synthesis(self, ws, c, update_emas=False):
        return self.G.synthesis(ws, c=c, update_emas=update_emas)


class TriPlaneLoss(StyleGAN2Loss):
    """EG3D's loss (NVlabs/eg3d: eg3d/training/loss.py), for the tri-plane generator and DualDiscriminator.

    On top of StyleGAN2Loss, with EG3D's constructor arguments:
    - images are dicts {'image', 'image_raw'}; the real raw image is filtered_resizing(real, nrr), blurred
      like D's input while the blur lasts; D's input blur applies to 'image' only; augmentation runs on
      [image, raw resized to image] jointly and the raw part is resized back;
    - the neural rendering resolution nrr = rint(initial (1 - a) + final a), a = min(cur_nimg /
      (fade_kimg 1e3), 1), or `initial` without a final value; G renders at it;
    - generator pose conditioning: the mapping sees roll(c, 1) instead of c with probability
      p = (1 - a) + a gpc_reg_prob, a = min(cur_nimg / (gpc_reg_fade_kimg 1e3), 1) (per sample, one draw
      per batch in the density term, as EG3D); without gpc_reg_prob it sees zeros;
    - dual R1: gamma / 2 (|grad_image D|^2 + |grad_raw D|^2). As in EG3D the gradients are taken with
      respect to D's actual inputs (after blur and augmentation), because EG3D's run_D writes them into
      the dict it is given;
    - density regularisation in Greg (G_reg_interval = density_reg_every): 1000 points U[-1, 1]^3 per
      sample and the same points moved by N(0, density_reg_p_dist); density_reg * L1(sigma, sigma moved).
      It is on when G.rendering_kwargs['density_reg'] > 0 ('l1' only); no path-length penalty.
    """

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=10, style_mixing_prob=0, pl_weight=0,
                 pl_batch_shrink=2, pl_decay=0.01, pl_no_weight_grad=False, blur_init_sigma=0, blur_fade_kimg=0,
                 r1_gamma_init=0, r1_gamma_fade_kimg=0, neural_rendering_resolution_initial=64,
                 neural_rendering_resolution_final=None, neural_rendering_resolution_fade_kimg=0,
                 gpc_reg_fade_kimg=1000, gpc_reg_prob=None, dual_discrimination=False, filter_mode='antialiased'):
        super().__init__(device, G, D, augment_pipe=augment_pipe, r1_gamma=r1_gamma, style_mixing_prob=style_mixing_prob,
                         pl_weight=pl_weight, pl_batch_shrink=pl_batch_shrink, pl_decay=pl_decay,
                         pl_no_weight_grad=pl_no_weight_grad, blur_init_sigma=blur_init_sigma,
                         blur_fade_kimg=blur_fade_kimg)
        _ = r1_gamma_init, r1_gamma_fade_kimg  # accepted and unused, as in EG3D
        if gpc_reg_prob is not None and not 0 <= gpc_reg_prob <= 1:
            raise ValueError(f'gpc_reg_prob must be in [0, 1], got {gpc_reg_prob}.')
        if not dual_discrimination:
            raise ValueError('TriPlaneLoss needs dual_discrimination=True (the DualDiscriminator sees image and raw image).')
        self.neural_rendering_resolution_initial = neural_rendering_resolution_initial
        self.neural_rendering_resolution_final = neural_rendering_resolution_final
        self.neural_rendering_resolution_fade_kimg = neural_rendering_resolution_fade_kimg
        self.gpc_reg_fade_kimg = gpc_reg_fade_kimg
        self.gpc_reg_prob = gpc_reg_prob
        self.dual_discrimination = dual_discrimination
        self.filter_mode = filter_mode
        self.resample_filter = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
        self._nrr = neural_rendering_resolution_initial
        self._swapping_prob = None

    # -- schedules -----------------------------------------------------------------------------

    def neural_rendering_resolution(self, cur_nimg):
        if self.neural_rendering_resolution_final is None:
            return self.neural_rendering_resolution_initial
        alpha = min(cur_nimg / (self.neural_rendering_resolution_fade_kimg * 1e3), 1)
        return int(np.rint(self.neural_rendering_resolution_initial * (1 - alpha)
                           + self.neural_rendering_resolution_final * alpha))

    def swapping_prob(self, cur_nimg):
        if self.gpc_reg_prob is None:
            return None
        alpha = min(cur_nimg / (self.gpc_reg_fade_kimg * 1e3), 1) if self.gpc_reg_fade_kimg > 0 else 1
        return (1 - alpha) * 1 + alpha * self.gpc_reg_prob

    def _conditioning(self, c, per_sample=True):
        """The label the mapping sees: c, roll(c, 1) with the swapping probability, or zeros."""
        if self._swapping_prob is None:
            return torch.zeros_like(c)
        shape = (c.shape[0], 1) if per_sample else []
        swap = torch.rand(shape, device=c.device) < self._swapping_prob
        return torch.where(swap, torch.roll(c.clone(), 1, 0), c)

    @property
    def G_reg_enabled(self):
        return self.G.rendering_kwargs.get('density_reg', 0) > 0

    # -- passes --------------------------------------------------------------------------------

    def run_G(self, z, c, update_emas=False):
        c_mapping = self._conditioning(c)
        ws = self.mix_styles(self.G.mapping(z, c_mapping, update_emas=update_emas), z, c_mapping)
        out = self.G.synthesis(ws, c, neural_rendering_resolution=self._nrr, update_emas=update_emas)
        return out, ws

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        # Writes D's actual inputs into `img`, as EG3D does (the dual R1 differentiates them).
        if blur_sigma > 0:
            with torch.autograd.profiler.record_function('blur'):
                img['image'] = blur(img['image'], blur_sigma)
        if self.augment_pipe is not None:
            image, raw = img['image'], img['image_raw']
            resize = dict(mode='bilinear', antialias=True)
            pair = self.augment_pipe(torch.cat([image, F.interpolate(raw, size=image.shape[2:], **resize)], dim=1))
            img['image'] = pair[:, :image.shape[1]]
            img['image_raw'] = F.interpolate(pair[:, image.shape[1]:], size=raw.shape[2:], **resize)
        return self.D(img, c, update_emas=update_emas)

    def detach_real(self, real_img, requires_grad):
        return {key: value.detach().requires_grad_(requires_grad) for key, value in real_img.items()}

    def r1_penalty(self, real_img, real_logits):
        with torch.autograd.profiler.record_function('r1_grads'), conv2d_gradfix.no_weight_gradients():
            grads = self.mixed_precision.input_grads(real_logits.sum(), [real_img['image'], real_img['image_raw']],
                                                     create_graph=True, only_inputs=True)
        return grads[0].square().sum([1, 2, 3]) + grads[1].square().sum([1, 2, 3])

    def extra_G_terms(self, stage, ctx):
        if stage != 'reg' or not self.G_reg_enabled:
            return {}
        options = self.G.rendering_kwargs
        c_mapping = self._conditioning(ctx.gen_c, per_sample=False)
        ws = self.mix_styles(self.G.mapping(ctx.gen_z, c_mapping, update_emas=False), ctx.gen_z, c_mapping)
        initial = torch.rand((ws.shape[0], 1000, 3), device=ws.device) * 2 - 1
        perturbed = initial + torch.randn_like(initial) * options['density_reg_p_dist']
        points = torch.cat([initial, perturbed], dim=1)
        sigma = self.G.sample_mixed(points, torch.randn_like(points), ws, update_emas=False)['sigma']
        half = sigma.shape[1] // 2
        return {'Gdensity': F.l1_loss(sigma[:, :half], sigma[:, half:]) * options['density_reg']}

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        self._nrr = self.neural_rendering_resolution(cur_nimg)
        self._swapping_prob = self.swapping_prob(cur_nimg)
        real_raw = filtered_resizing(real_img, size=self._nrr, f=self.resample_filter, filter_mode=self.filter_mode)
        real_raw = blur(real_raw, self.blur_sigma(cur_nimg))  # EG3D blurs the raw target too
        super().accumulate_gradients(phase, {'image': real_img, 'image_raw': real_raw}, real_c, gen_z, gen_c, gain,
                                     cur_nimg)


class GramLoss(StyleGAN2Loss):
    """GRAM's losses (microsoft/GRAM processes/processes.py, Gan3DProcess), on StyleGAN2Loss.

    With GRAM's constructor arguments r1_lambda (here r1_gamma, train.py's --gamma), pos_lambda and
    real_pos_lambda:
    - fakes are rendered from cameras drawn from G's own pose prior (`G.sample_labels`, with torch's
      global generator, which the training loop seeds from (seed, step, phase, chunk), so a resumed
      run draws the same cameras); the dataset labels that the loop passes as `gen_c` are not used;
    - non-saturating logistic losses as StyleGAN2Loss, and R1 = r1_gamma / 2 |grad_x D(x)|^2 on reals
      (GRAM's 0.5 r1_lambda, every step with D_reg_interval=None);
    - D's pose head (`D(img, c, return_pose=True)`, (phi, theta)) regresses, with GRAM's
      nn.MSELoss() (the mean over the images and both angles): on fakes the sampled pose,
      pos_lambda MSE, in the G loss ('Gpos') and in the D loss ('Dpos_fake'); on reals the pose of
      the dataset label, real_pos_lambda MSE, in the D loss only ('Dpos_real'; none when
      real_pos_lambda is 0, as in GRAM). The real pose is `cameras.gram_pose_from_label` with the
      azimuth taken in [h_mean - pi, h_mean + pi) of G's prior, the branch GRAM's own labels use
      (its CARLA azimuths run over (-pi/2, 3pi/2]).
    The extra terms are per-image means over the two angles, so their batch mean is GRAM's MSE.

    patch_split=P (GRAM's --patch_split, None = off): the exact chunked G step. The fakes are
    rendered whole without autograd, D and the G losses give the gradient with respect to the image,
    then each of P row-major pixel ranges is rendered again with autograd and back-propagates its
    part of that gradient: the same gradients, with G's activation memory divided by P. D always
    sees full images.
    """

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=1, pos_lambda=15, real_pos_lambda=15,
                 patch_split=None, **kwargs):
        super().__init__(device, G, D, augment_pipe=augment_pipe, r1_gamma=r1_gamma, **kwargs)
        if patch_split is not None and (int(patch_split) != patch_split or patch_split < 1):
            raise ValueError(f'patch_split must be a positive integer or None, got {patch_split}.')
        self.pos_lambda = pos_lambda
        self.real_pos_lambda = real_pos_lambda
        self.patch_split = patch_split
        self._gen_pose = None   # (phi, theta) [N, 2] of the cameras of the latest run_G
        self._pred_pose = None  # D's pose [N, 2] of the latest run_D

    def real_pose(self, c):
        """(phi, theta) [N, 2] of camera labels c [N, 25], theta in [h_mean - pi, h_mean + pi)."""
        phi, theta = cameras.gram_pose_from_label(c)
        mean = float(getattr(self.G, 'h_mean', math.pi / 2))
        theta = torch.remainder(theta - (mean - math.pi), 2 * math.pi) + (mean - math.pi)
        return torch.stack([phi, theta], dim=-1)

    def run_G(self, z, c, update_emas=False):
        _ = c  # GRAM draws the cameras of its fakes from its prior, never from the dataset
        labels, pose = self.G.sample_labels(z.shape[0], device=z.device)
        ws = self.G.mapping(z, labels, update_emas=update_emas)
        img = self.G.synthesis(ws, labels, update_emas=update_emas)
        self._gen_pose = pose
        return img, ws

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        logits, self._pred_pose = self.D(self.D_input(img, blur_sigma), c, update_emas=update_emas, return_pose=True)
        return logits

    def _G_main(self, gen_z, gen_c, gain, ctx):
        if not self.patch_split or self.patch_split == 1:
            return super()._G_main(gen_z, gen_c, gain, ctx)
        with self.forward_scope('Gmain_forward'):
            labels, self._gen_pose = self.G.sample_labels(gen_z.shape[0], device=gen_z.device)
            with torch.no_grad():
                gen_img = self.G.synthesis(self.G.mapping(gen_z, labels), labels)
            gen_img.requires_grad_(True)
            loss = self._G_main_loss(gen_img, None, gen_z, gen_c, ctx)
            image_grad = torch.autograd.grad(loss.mul(gain), [gen_img])[0].flatten(2)
        with torch.autograd.profiler.record_function('Gmain_backward'):
            pixels = image_grad.shape[2]
            for index in range(self.patch_split):
                with self.mixed_precision.autocast():
                    part = self.G.synthesis(self.G.mapping(gen_z, labels), labels, patch=(index, self.patch_split))
                part.backward(image_grad[..., pixels * index // self.patch_split:pixels * (index + 1) // self.patch_split])

    @staticmethod
    def _pose_error(pred, target):
        return (pred - target.to(pred.dtype)).square().mean(dim=1)

    def extra_G_terms(self, stage, ctx):
        if stage != 'main':
            return {}
        return {'Gpos': self._pose_error(self._pred_pose, self._gen_pose) * self.pos_lambda}

    def extra_D_terms(self, stage, ctx):
        if stage == 'gen':
            return {'Dpos_fake': self._pose_error(self._pred_pose, self._gen_pose) * self.pos_lambda}
        if stage == 'real' and self.real_pos_lambda > 0:
            return {'Dpos_real': self._pose_error(self._pred_pose, self.real_pose(ctx.real_c)) * self.real_pos_lambda}
        return {}


class EpiGRAFLoss(StyleGAN2Loss):
    """EpiGRAF's patch-wise loss (universome/epigraf src/training/loss.py and training_loop.py), on StyleGAN2Loss.

    - Fakes: G renders the rays of a patch (training.patches.sample_patch_params, one draw per
      mini-batch-std group, its scale schedule at cur_nimg); D sees the patch with its (scale, offset).
    - Reals: each image gives one patch of its own draw from the same distribution, resampled
      bilinearly from the whole image (training.patches.extract_patches, at G's ray grid); R1 is
      taken on those patches.
    - Generator pose conditioning (when G's mapping is camera-conditioned): with probability
      p = 1 -> camera_cond_spoof_p linearly over 1000 kimg a sample's conditioning angles are rolled
      among the selected ones (EpiGRAF's "spoofing"), per accumulate_gradients call here (per phase
      batch there).
    - The NeRF density noise follows G.progressive_update(cur_kimg) (nerf_noise_std_init -> 0 over
      nerf_noise_kimg_growth); set here from cur_nimg before each pass (EpiGRAF updates it after each
      step, so its first step has none), which keeps resume exact.
    - Images are dicts {'image', 'scales', 'offsets'} between run_G / run_D. No style mixing and no
      path-length term (EpiGRAF's epigraf model has neither).
    """

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=0.1, patch_kwargs=None, camera_cond_spoof_p=0.5,
                 **kwargs):
        super().__init__(device, G, D, augment_pipe=augment_pipe, r1_gamma=r1_gamma, **kwargs)
        if self.style_mixing_prob != 0 or self.pl_weight != 0:
            raise ValueError('EpiGRAFLoss has no style mixing and no path-length term (style_mixing_prob and pl_weight 0).')
        self.patch_kwargs = dict(patch_kwargs or {'enabled': False})
        if self.patch_kwargs['enabled']:
            patches.scale_schedule(self.patch_kwargs, 0)  # an unknown distribution fails here, not mid-training
        self.camera_cond_spoof_p = camera_cond_spoof_p
        self._cur_kimg = 0.0

    def spoofing_prob(self, cur_kimg):
        return patches.linear_schedule(cur_kimg, 1.0, self.camera_cond_spoof_p, 1000)

    def _patches(self, batch_size, device):
        if not self.patch_kwargs['enabled']:
            return None
        return patches.sample_patch_params(batch_size, self.patch_kwargs, self._cur_kimg, device,
                                           group_size=self.patch_kwargs.get('mbstd_group_size', 1))

    def _conditioning_angles(self, c):
        angles = cameras.epigraf_angles_from_label(c.to(torch.float32))
        spoof = torch.rand(angles.shape[0], device=angles.device) < self.spoofing_prob(self._cur_kimg)
        angles[spoof] = angles[spoof].roll(shifts=1, dims=0)
        return angles

    def run_G(self, z, c, update_emas=False):
        ws = self.G.mapping(z, torch.zeros([len(z), 0], device=z.device), camera_angles=self._conditioning_angles(c),
                            update_emas=update_emas)
        patch = self._patches(len(z), z.device)
        img = self.G.synthesis(ws, c=c, patch=patch, update_emas=update_emas)
        return self._with_patch(img, patch), ws

    @staticmethod
    def _with_patch(img, patch):
        return {'image': img, 'scales': None if patch is None else patch[0], 'offsets': None if patch is None else patch[1]}

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        patch = None if img['scales'] is None else (img['scales'], img['offsets'])
        return self.D(self.D_input(img['image'], blur_sigma), c, patch=patch, update_emas=update_emas)

    def detach_real(self, real_img, requires_grad):
        return dict(real_img, image=real_img['image'].detach().requires_grad_(requires_grad))

    def r1_penalty(self, real_img, real_logits):
        return super().r1_penalty(real_img['image'], real_logits)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        self._cur_kimg = cur_nimg / 1000
        self.G.progressive_update(self._cur_kimg)
        patch = self._patches(len(real_img), real_img.device)
        if patch is not None:
            real_img = patches.extract_patches(real_img, *patch, self.patch_kwargs['resolution'],
                                               legacy=self.G.synthesis.legacy_rays)
        super().accumulate_gradients(phase, self._with_patch(real_img, patch), real_c, gen_z, gen_c, gain, cur_nimg)
