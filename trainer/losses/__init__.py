"""Training losses, one per module, each with its formula and source in the docstring."""

from trainer.losses.infonce import false_negative_mask, masked_infonce
from trainer.losses.mmse import mmse_loss
from trainer.losses.roar import roar_loss

__all__ = ["false_negative_mask", "masked_infonce", "mmse_loss", "roar_loss"]
