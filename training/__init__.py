"""Network training: networks, cameras, rendering, augmentation, losses, datasets and the training loop."""
