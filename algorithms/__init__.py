"""Built-in algorithms; importing this package registers them."""

from ssl_toolkit.algorithms import mean_teacher, pi_model, supervised, temporal_ensembling

__all__ = ["mean_teacher", "pi_model", "supervised", "temporal_ensembling"]
