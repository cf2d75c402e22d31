"""Model zoo: CIFAR-style CNNs registered by name, plus any torchvision classifier as ``torchvision:NAME``."""

from hwprune.models.registry import ModelSpec, available_models, create_model, register_model

# Importing the zoo modules registers their models.
from hwprune.models import mobilenetv2, resnet_cifar, vgg  # noqa: E402,F401  isort: skip

__all__ = ["ModelSpec", "available_models", "create_model", "register_model"]
