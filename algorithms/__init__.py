"""Built-in algorithms; importing this package registers them."""

from ssl_toolkit.algorithms import (
    fixmatch,
    mean_teacher,
    pi_model,
    pseudo_label,
    supervised,
    temporal_ensembling,
    vat,
)

__all__ = ["fixmatch", "mean_teacher", "pi_model", "pseudo_label", "supervised", "temporal_ensembling", "vat"]
