"""Write tests/data/omegaconf_dictconfig_<version>.pkl: an OmegaConf DictConfig pickled as EpiGRAF pickles its `cfg`.

Run by hand with OmegaConf installed, never by the test suite (which must not import OmegaConf), e.g.

    pip install --target /tmp/ocpkgs omegaconf==2.0.6    # hydra-core 1.0's, EpiGRAF's environment.yml
    PYTHONPATH=/tmp/ocpkgs python tests/data/make_omegaconf_fixture.py

EpiGRAF's train.py loads its experiment config (unresolved `${...}` interpolations kept, struct mode on),
passes the subtree `cfg.model.generator` to the Generator, and the persistent class deep-copies it into
`_init_kwargs`; a deep copy keeps the link to the parent, so the pickle holds the whole config. This
script does the same with a small config of EpiGRAF's shape whose generator subtree resolves to the tiny
network of tests/training/test_networks_epigraf.py (SPEC_CFG) plus keys the official config has. A few
typed nodes (StringNode, IntegerNode, FloatNode, BooleanNode, as structured configs make) sit under
`typed`. A custom resolver (`${hydra:...}`, as EpiGRAF's env.project_path) sits outside the subtree: the
loader leaves such interpolations as they are. The resolved subtree, as OmegaConf itself gives it, is written beside as a .json file; the
test pins the same dict.
"""

import copy
import json
import os
import pickle

import omegaconf
from omegaconf import DictConfig, OmegaConf
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode, StringNode

CONFIG = """
dataset:
  name: tiny
  resolution: 8
  camera: {fov: 12.0, ray_start: 0.88, ray_end: 1.12, radius: 1.0, dist: beta}
  cube_scale: 0.2
  white_back: false
  last_back: false
training:
  patch:
    enabled: true
    patch_params_cond: true
    resolution: 4
    mbstd_group_size: 2
    distribution: beta
    min_scale_trg: 0.125
  outdir: runs/${dataset.name}
env:
  project_path: ${hydra:runtime.cwd}
model:
  name: epigraf
  generator:
    fmaps: 1.0
    cmax: 512
    cbase: 32768
    optim: {lr: 0.0025, betas: [0.0, 0.99]}
    patch: ${training.patch}
    dataset: ${dataset}
    w_dim: 8
    camera_cond: true
    camera_cond_drop_p: 0.0
    camera_cond_spoof_p: 0.5
    map_depth: 2
    backbone: stylegan2
    num_ray_steps: 6
    clamp_mode: softplus
    nerf_noise_std_init: 1.0
    nerf_noise_kimg_growth: 5000
    density_shift: 0.0
    use_noise: true
    tri_plane:
      res: 16
      feat_dim: 4
      fp32: true
      view_hid_dim: 0
      posenc_period_len: 0
      mlp: {n_layers: 2, hid_dim: 8}
    bg_model:
      type: ~
      output_channels: 4
      fmm: {enabled: false, rank: 3, activation: demod}
      posenc_period_len: 64.0
    run_name: epigraf-${dataset.name}-${dataset.resolution}
    extra_steps: [1, 2.5, "x", ~, true]
"""


def main():
    cfg = OmegaConf.create(CONFIG)
    cfg.model.generator.typed = DictConfig({'name': StringNode('epigraf'), 'steps': IntegerNode(48),
                                            'scale': FloatNode(0.5), 'flag': BooleanNode(False)})
    OmegaConf.set_struct(cfg, True)
    generator_cfg = copy.deepcopy(cfg.model.generator)  # what persistent_class records
    version = '.'.join(omegaconf.__version__.split('.')[:2])
    folder = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(folder, f'omegaconf_dictconfig_{version}.pkl')
    with open(path, 'wb') as f:
        pickle.dump(generator_cfg, f, protocol=4)  # the official training loop's pickle.dump default
    resolved = OmegaConf.to_container(generator_cfg, resolve=True)
    with open(os.path.splitext(path)[0] + '.json', 'w') as f:
        json.dump(resolved, f, indent=1, sort_keys=True)
        f.write('\n')
    print(f'Wrote {path} (OmegaConf {omegaconf.__version__})')


if __name__ == '__main__':
    main()
