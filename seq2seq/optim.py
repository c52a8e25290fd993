"""``seq2seq.optim``, the name SPEC.md promises: the optimizers of ``training/optim.py``."""
from .training.optim import SGD, AdamW, LinearSchedule, clip_grad_norm_, param_groups  # noqa: F401
