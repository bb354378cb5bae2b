"""``ssl-bench export``, ``ssl-bench evaluate`` and ``ssl-bench predict``: using a trained model."""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time

from rich.console import Console
from rich.table import Table

from ssl_toolkit.results import atomic_write_bytes

DEVICES = ("auto", "cpu", "cuda")


def add_model_parsers(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="write a run's model as model.safetensors + config.json + preprocess.json",
        description="Write one model of a run folder as an export: its weights (model.safetensors), a timm "
                    "config.json, and the preprocessing it expects with the class names (preprocess.json).",
    )
    export.add_argument("run_dir", help="the run folder (holds config.json and checkpoint.pt)")
    export.add_argument("--model", default="student", help="which evaluated model: student, or teacher for "
                                                            "Mean Teacher (default: student)")
    export.add_argument("--out", required=True, help="the export folder to write")
    export.add_argument("--overwrite", action="store_true", help="replace an export already in --out")
    export.set_defaults(handler=cmd_export)

    evaluate = commands.add_parser(
        "evaluate", help="test error of a run folder's models or of an export, next to the recorded one",
        description="Rebuild the model(s) of a run folder from its checkpoint, or load an export, and compute the "
                    "test error as training did; prints it next to the error the run recorded (final.json).",
    )
    evaluate.add_argument("path", help="a run folder or an export folder")
    evaluate.add_argument("--model", action="append", help="evaluate only this model; repeatable (default: every "
                                                           "model the run evaluates)")
    evaluate.add_argument("--data-dir", help="where the data set's files are now, if they moved since training")
    evaluate.add_argument("--device", choices=DEVICES, help="where to evaluate (default: the run's own setting)")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser(
        "predict", help="classify image files or an .npz with an export: top-k classes and probabilities",
        description="Classify image files, or the images in an .npz ('images' or 'x_test' array, or its only "
                    "array), with an exported model; prints the top-k classes of each with their probabilities.",
    )
    predict.add_argument("export_dir", help="the export folder (written by ssl-bench export)")
    predict.add_argument("inputs", nargs="+", help="image files (.png, .jpg, ...) or .npz files")
    predict.add_argument("--top", type=int, help="how many classes to show per image (default: 3, or every class "
                                                 "of a model with fewer)")
    predict.add_argument("--csv", help="also write the predictions to this CSV file "
                                       "(input, rank, class_index, class, probability)")
    predict.add_argument("--device", choices=DEVICES, default="cpu", help="where to run the model (default: cpu)")
    predict.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    predict.set_defaults(handler=cmd_predict)


def cmd_export(args: argparse.Namespace) -> int:
    from ssl_toolkit.export import export_model

    record = export_model(args.run_dir, args.out, args.model, overwrite=args.overwrite)
    recorded = record["test_error"]
    error = "" if recorded is None else f", recorded test error {recorded:.2f}%"
    print(f"exported the {record['model']} of step {record['step']}{error} to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ssl_toolkit.export import evaluate_path

    results = evaluate_path(args.path, args.model, args.data_dir, args.device)
    table = Table(title=f"{args.path}, step {results[0].step}")
    for column in ("model", "test error %", "recorded test error %", "same"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for result in results:
        recorded = "-" if result.recorded is None else f"{result.recorded:.2f}"
        same = {True: "yes", False: "NO", None: "-"}[result.matches]
        table.add_row(result.model, f"{result.test_error:.2f}", recorded, same)
    Console().print(table)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from ssl_toolkit.errors import UserInputError
    from ssl_toolkit.export import load_exported, predict, read_inputs
    from ssl_toolkit.trainer import pick_device

    if args.threads is not None:
        if args.threads < 1:
            raise UserInputError(f"--threads {args.threads} is out of range; valid: a positive integer")
        torch.set_num_threads(args.threads)
    model, preprocess = load_exported(args.export_dir, pick_device(args.device))
    started = time.perf_counter()
    names, images = read_inputs(args.inputs, preprocess)
    predictions = predict(model, preprocess, images, names, args.top)
    seconds = time.perf_counter() - started
    for prediction in predictions:
        ranked = ", ".join(f"{name} {100 * p:.1f}%" for _, name, p in prediction.classes)
        print(f"{prediction.source}: {ranked}")
    if args.csv:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(("input", "rank", "class_index", "class", "probability"))
        for prediction in predictions:
            for rank, (index, name, p) in enumerate(prediction.classes, start=1):
                writer.writerow((prediction.source, rank, index, name, repr(p)))
        atomic_write_bytes(args.csv, text.getvalue().encode())
    print(f"{len(predictions)} images in {seconds:.2f} s ({len(predictions) / max(seconds, 1e-9):.0f} images/s, "
          f"reading included)", file=sys.stderr)
    return 0
