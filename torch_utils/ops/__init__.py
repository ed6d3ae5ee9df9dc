"""Low-level operations with the official StyleGAN signatures: a pure-PyTorch reference path for every device, a CUDA path where one exists."""
