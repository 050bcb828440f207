"""layerforge.optim: torch.optim's optimizers on fused C++ steps, and learning-rate schedulers."""
from . import lr_scheduler
from .optimizer import SGD, Adam, AdamW, Optimizer, RMSprop

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler"]
