"""The architecture slot: one module per architecture (``bert`` first), each registering its ``Architecture`` entry
(bertfast.models.registry), which ``model_type`` in config.json selects. Importing the package loads the registry
only; an architecture's module is imported the first time its ``model_type`` is looked up."""
from bertfast.models.registry import (ARCHITECTURES, Architecture, LinearSlot, architecture_of, get_architecture,
                                      read_config, register, unregister)

__all__ = ["ARCHITECTURES", "Architecture", "LinearSlot", "architecture_of", "get_architecture", "read_config",
           "register", "unregister"]
