"""Fusion model, missing-modality evaluator, losses and checkpoints.

Import from the submodules: nothing is re-exported here, so the torch-free parts (the
configs the CLI reads at start-up) load without torch.
"""
