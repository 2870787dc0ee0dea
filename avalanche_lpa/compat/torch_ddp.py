"""DDP's switch for buffer synchronisation before each forward pass, under its name on every torch (2.11 to 2.14)."""
import inspect
from typing import Dict

from torch.nn.parallel import DistributedDataParallel

__all__ = ["NO_FORWARD_BUFFER_SYNC"]

# Buffers are synchronised when a wrapper is built and at experience ends, not before every forward pass.
# torch 2.14 (installed here) deprecates ``broadcast_buffers`` for ``forward_sync_buffers`` (still syncs at init).
NO_FORWARD_BUFFER_SYNC: Dict[str, bool] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)
