"""timm's weight-decay param groups under one name on every timm (0.9.16 to 1.0.x tested).

timm 1.0 exports ``param_groups_weight_decay`` from ``timm.optim``; timm 0.9 only from ``timm.optim.optim_factory``.
"""
try:
    from timm.optim import param_groups_weight_decay
except ImportError:  # timm 0.9
    from timm.optim.optim_factory import param_groups_weight_decay

__all__ = ["param_groups_weight_decay"]
