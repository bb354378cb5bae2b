"""The export folder: a trained model's weights, its timm config and the preprocessing it expects.

``export_model`` writes, atomically:

- ``model.safetensors``: the chosen model's weights only (a plain timm state dict);
- ``config.json``: timm's model config (``architecture``, ``num_classes``, ``model_args``,
  ``label_names``, ``pretrained_cfg`` with ``input_size``, ``mean``, ``std``), so a timm model
  exported here loads with ``timm.create_model("local-dir:DIR", pretrained=True)``; its ``ssl_bench``
  entry records where the model came from (run config, model, step, recorded test error);
- ``preprocess.json``: how uint8 images become the model's input (``standardize``: divide by 255,
  subtract ``mean``, divide by ``std`` per channel; or ``zca``), the input size and the class names;
- ``preprocess.safetensors``: the ZCA mean and matrix (ZCA exports only), in float32, the precision
  the whitener applies them in.

``load_exported`` reads the folder back into ``(model, preprocess)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssl_toolkit.data.augment import Normalizer, Preprocess
from ssl_toolkit.data.zca import ZCAWhitener
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.export.rebuild import classifier_network, load_run, recorded_test_error
from ssl_toolkit.results import RunFolder, atomic_write_bytes, atomic_write_json

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESS_FILE = "preprocess.json"
ZCA_FILE = "preprocess.safetensors"
EXPORT_FILES = (MODEL_FILE, CONFIG_FILE, PREPROCESS_FILE, ZCA_FILE)
EXPORT_FORMAT = 1


@dataclass(frozen=True)
class ExportedPreprocess:
    """What an exported model expects: ``preprocess(images)`` turns uint8 images ``(N, C, H, W)`` of
    ``input_size`` into its input; ``class_names[i]`` names output ``i``.

    Example:
        >>> model, preprocess = load_exported("model/")
        >>> probabilities = model(preprocess(images_uint8)).softmax(dim=1)
    """

    transform: Preprocess
    input_size: tuple[int, int, int]
    class_names: list[str]

    def __call__(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or tuple(images.shape[1:]) != self.input_size:
            raise UserInputError(f"the exported model takes images shaped (N, {', '.join(map(str, self.input_size))}), "
                                 f"got {tuple(images.shape)}; resize them first (ssl-bench predict does)")
        return self.transform(images)

    def to(self, device: torch.device | str) -> ExportedPreprocess:
        return replace(self, transform=self.transform.to(torch.device(device)))


def _layer_name(model: nn.Module, layer: nn.Module) -> str | None:
    return next((name for name, module in model.named_modules() if module is layer), None)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file, not a folder; choose another --out")
    existing = [name for name in EXPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise UserInputError(f"--out {out} already holds an export ({', '.join(existing)}); add --overwrite to "
                             f"replace it, or choose another --out")


def export_model(run_dir: str | Path, out: str | Path, model: str = "student", *, overwrite: bool = False,
                 device: str | None = "cpu") -> dict[str, Any]:
    """Export evaluated model ``model`` of the run in ``run_dir`` to the folder ``out``; returns the
    ``ssl_bench`` record written into its config.json.

    Example:
        >>> export_model("runs/fashion_mnist-1000/mean_teacher/seed0", "model/", model="teacher")
    """
    from safetensors.torch import save

    out = Path(out)
    _check_out(out, overwrite)
    trainer = load_run(run_dir, device)
    network = classifier_network(trainer, model)
    data, config = trainer.data, trainer.config
    input_size = tuple(int(s) for s in data.pool.shape[1:])
    class_names = list(data.class_names or [str(i) for i in range(data.num_classes)])
    state = data.preprocess.state_dict()
    record = {
        "format": EXPORT_FORMAT, "model": model, "algo": config.algo, "step": trainer.step,
        "split": data.split.name, "test_error": recorded_test_error(run_dir, trainer.step, model),
        "preprocess": PREPROCESS_FILE, "run_config": json.loads(RunFolder(run_dir).config.read_text()),
    }
    # Cloned, so no two entries share storage (safetensors refuses shared tensors).
    weights = {key: value.detach().cpu().clone().contiguous() for key, value in network.state_dict().items()}
    preprocess = {"format": EXPORT_FORMAT, "kind": state["kind"], "input_size": list(input_size),
                  "class_names": class_names, "resize": "bicubic (Pillow)"}
    standardize = state["kind"] == "standardize"
    if standardize:
        preprocess.update(mean=state["mean"].tolist(), std=state["std"].tolist())
    else:
        preprocess.update(epsilon=float(state["epsilon"]), tensors=ZCA_FILE,
                          gcn_scale=None if torch.isnan(state["gcn_scale"]) else float(state["gcn_scale"]))
    timm_config = {
        "architecture": config.backbone,
        "num_classes": data.num_classes,
        "num_features": int(getattr(network, "num_features", 0)) or None,
        "model_args": {"in_chans": input_size[0], "num_classes": data.num_classes},
        "label_names": class_names,
        "pretrained_cfg": {
            "input_size": list(input_size), "fixed_input_size": False, "interpolation": "bicubic", "crop_pct": 1.0,
            "crop_mode": "center",
            # timm's transforms can express standardization only; a ZCA model needs preprocess.json.
            "mean": preprocess["mean"] if standardize else [0.0] * input_size[0],
            "std": preprocess["std"] if standardize else [1.0] * input_size[0],
            "num_classes": data.num_classes, "first_conv": _first_conv(network),
            "classifier": _layer_name(network, network.get_classifier()), "custom_load": False,
        },
        "ssl_bench": record,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / MODEL_FILE, save(weights, metadata={"format": "pt"}))
    if standardize:
        (out / ZCA_FILE).unlink(missing_ok=True)  # a replaced ZCA export's leftover
    else:
        zca = {"mean": state["mean"].to(torch.float32).contiguous(), "matrix": state["matrix"].to(torch.float32)}
        atomic_write_bytes(out / ZCA_FILE, save(zca, metadata={"format": "pt"}))
    atomic_write_json(out / PREPROCESS_FILE, preprocess)
    atomic_write_json(out / CONFIG_FILE, timm_config)
    return record


def _first_conv(network: nn.Module) -> str | None:
    return next((name for name, module in network.named_modules() if isinstance(module, nn.Conv2d)), None)


def read_export_config(folder: str | Path) -> dict[str, Any]:
    """config.json of an export folder, after checking the folder holds one."""
    folder = Path(folder)
    missing = [name for name in (MODEL_FILE, CONFIG_FILE, PREPROCESS_FILE) if not (folder / name).is_file()]
    if missing:
        raise UserInputError(f"{folder} is not an export (missing {', '.join(missing)}); "
                             f"valid: a folder written by ssl-bench export")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except ValueError as error:
        raise UserInputError(f"{folder / CONFIG_FILE} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("ssl_bench"), dict):
        raise UserInputError(f"{folder / CONFIG_FILE} was not written by ssl-bench export (no ssl_bench entry)")
    return config


def read_preprocess(folder: str | Path) -> ExportedPreprocess:
    """The preprocessing of an export folder (preprocess.json, and preprocess.safetensors for ZCA)."""
    folder = Path(folder)
    spec = json.loads((folder / PREPROCESS_FILE).read_text())
    input_size = tuple(int(s) for s in spec["input_size"])
    if spec["kind"] == "standardize":
        transform: Preprocess = Normalizer(torch.tensor(spec["mean"], dtype=torch.float32),
                                           torch.tensor(spec["std"], dtype=torch.float32))
    elif spec["kind"] == "zca":
        from safetensors.torch import load_file

        tensors = load_file(str(folder / spec["tensors"]))
        transform = ZCAWhitener(tensors["mean"], tensors["matrix"], input_size, spec["epsilon"], spec["gcn_scale"])
    else:
        raise UserInputError(f"{folder / PREPROCESS_FILE}: unknown kind {spec['kind']!r}; valid: standardize, zca")
    return ExportedPreprocess(transform, input_size, list(spec["class_names"]))


def load_exported(folder: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ExportedPreprocess]:
    """The exported model (in eval mode) and its preprocessing, from a folder ``ssl-bench export`` wrote.

    The model is the backbone named in config.json, built through timm's registry (plugins the run
    used are imported first) with the saved weights loaded strictly.

    Example:
        >>> model, preprocess = load_exported("model/")
        >>> logits = model(preprocess(images_uint8))           # uint8 (N, C, H, W) of preprocess.input_size
        >>> [preprocess.class_names[i] for i in logits.argmax(dim=1)]
    """
    from safetensors.torch import load_file

    from ssl_toolkit.backbones import create_backbone
    from ssl_toolkit.registry import load_plugins

    folder = Path(folder)
    config = read_export_config(folder)
    load_plugins(config["ssl_bench"]["run_config"].get("plugins") or [])
    model = create_backbone(config["architecture"], in_chans=config["model_args"]["in_chans"],
                            num_classes=config["num_classes"])
    try:
        model.load_state_dict(load_file(str(folder / MODEL_FILE)))
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UserInputError(f"{folder / MODEL_FILE} does not fit {config['architecture']}: "
                             f"{(lines[1] if len(lines) > 1 else lines[0])[:200]}") from None
    return model.eval().to(device), read_preprocess(folder).to(device)
