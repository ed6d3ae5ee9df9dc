"""PyTorch utilities shared by every model: persistence, misc helpers, statistics, distributed set-up, custom-op builds."""
