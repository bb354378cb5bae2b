"""Using a trained model: export it (safetensors + timm config + preprocessing), load it back,
evaluate it, and classify new images. See docs/using-a-model.md."""

from ssl_toolkit.export.evaluate import Evaluation, evaluate_export, evaluate_path, evaluate_run
from ssl_toolkit.export.folder import ExportedPreprocess, export_model, load_exported
from ssl_toolkit.export.predict import Prediction, predict, read_inputs

__all__ = [
    "Evaluation",
    "ExportedPreprocess",
    "Prediction",
    "evaluate_export",
    "evaluate_path",
    "evaluate_run",
    "export_model",
    "load_exported",
    "predict",
    "read_inputs",
]
