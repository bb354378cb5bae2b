"""The one generic training loop, used by every algorithm."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ssl_toolkit.algorithm import Batch, DataContext, SSLAlgorithm, StepInfo
from ssl_toolkit.backbones import create_backbone
from ssl_toolkit.checkpoint import capture_rng_states, load_checkpoint, restore_rng_states, save_checkpoint
from ssl_toolkit.config import RunConfig, config_differences
from ssl_toolkit.data.augment import AugmentConfig, BatchAugmenter, Normalizer
from ssl_toolkit.data.sampling import TwoStreamSampler
from ssl_toolkit.data.sources import load_dataset
from ssl_toolkit.data.splits import Split, make_split
from ssl_toolkit.data.zca import ZCAWhitener
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.evaluation import best_by_validation, class_logits, consistency_logits, error_rate
from ssl_toolkit.losses import NO_LABEL, masked_cross_entropy
from ssl_toolkit.optim import apply_schedule, build_optimizer
from ssl_toolkit.registry import get_algorithm
from ssl_toolkit.results import RunFolder, atomic_write_json, write_jsonl


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the loss terms.

    Raised before the optimizer step, so the parameters, the last checkpoint and metrics.jsonl
    all still hold finite values; ``step`` is the 1-based step whose loss was not finite.
    """

    def __init__(self, step: int, terms: dict[str, float]) -> None:
        self.step = step
        self.terms = terms
        listed = ", ".join(f"{name}={value}" for name, value in terms.items())
        super().__init__(f"loss is not finite at step {step}: {listed}")


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA device is available here; valid: auto, cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_deterministic_algorithms() -> None:
    """Make GPU runs repeatable where torch can: deterministic kernels, no cuDNN autotuning.

    cuBLAS needs a fixed workspace for repeatable matrix products; the variable must be set before
    the first cuBLAS call, hence before any tensor reaches the GPU. An operation without a
    deterministic implementation then raises instead of silently varying.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class PreparedData:
    """Training pool, evaluation sets and split, as tensors on the training device."""

    pool: torch.Tensor
    pool_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    split: Split
    num_classes: int
    normalizer: Normalizer | ZCAWhitener


def prepare_data(config: RunConfig, device: torch.device) -> PreparedData:
    arrays = load_dataset(config.dataset, config.data_dir, config.dataset_options())
    extra = arrays.x_extra_unlabeled
    split = make_split(
        config.dataset, arrays.y_train, arrays.num_classes, config.labels, config.val_size, config.seed,
        num_extra_unlabeled=0 if extra is None else len(extra), unlabeled_pool=config.unlabeled_pool,
    )
    pool_np = arrays.x_train if extra is None else np.concatenate([arrays.x_train, extra])
    labels_np = np.concatenate([arrays.y_train, np.full(len(pool_np) - len(arrays.y_train), NO_LABEL)])
    pool = torch.from_numpy(pool_np).to(device)
    pool_labels = torch.from_numpy(labels_np).to(device)
    # Statistics from the training pool only (never validation or test images).
    sample = split.unlabeled[np.random.default_rng(0).permutation(len(split.unlabeled))[:50_000]]
    fit_images = pool[torch.from_numpy(np.sort(sample)).to(device)]
    normalizer = ZCAWhitener.fit(fit_images) if config.zca else Normalizer.fit(fit_images)
    val = torch.from_numpy(split.val).to(device)
    return PreparedData(
        pool=pool,
        pool_labels=pool_labels,
        val_images=pool[val],
        val_labels=pool_labels[val],
        test_images=torch.from_numpy(arrays.x_test).to(device),
        test_labels=torch.from_numpy(arrays.y_test).to(device),
        split=split,
        num_classes=arrays.num_classes,
        normalizer=normalizer,
    )


ProgressCallback = Callable[[int, dict[str, float]], None]
CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = frozenset(
    {"format", "algo", "config", "step", "algorithm", "optimizer", "metrics", "sums", "wall_time_s", "rng"}
)


class Trainer:
    """Runs one configured training: data, split, model, loop, evaluation, checkpoints, results.

    Everything is prepared and checked in the constructor, so bad input fails before any step.

    Example:
        >>> trainer = Trainer(resolve_run_config({"dataset": "digits", "steps": 100}))
        >>> final = trainer.run()
    """

    def __init__(self, config: RunConfig, resume: bool = False) -> None:
        self.config = config
        self.folder = RunFolder(config.out)
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        if config.deterministic:
            use_deterministic_algorithms()
        self.device = pick_device(config.device)
        self.data = prepare_data(config, self.device)
        split = self.data.split
        self.sampler = TwoStreamSampler(
            split.labeled, split.unlabeled, config.batch_size, config.labeled_batch_size, config.seed
        )
        self.context = DataContext(
            num_classes=self.data.num_classes,
            num_labeled=len(split.labeled),
            num_unlabeled=len(split.unlabeled),
            pool_size=len(self.data.pool),
            total_steps=config.steps,
            steps_per_epoch=self.sampler.steps_per_epoch,
            labeled_share=config.labeled_batch_size / config.batch_size,
        )
        algorithm_cls = get_algorithm(config.algo)
        hparams = algorithm_cls.Config(**config.hparams)
        hparams.validate(self.context)
        in_chans = self.data.pool.shape[1]
        student = create_backbone(
            config.backbone, in_chans=in_chans, num_classes=self.data.num_classes,
            **algorithm_cls.backbone_options(hparams),
        )
        self.algorithm: SSLAlgorithm = algorithm_cls(student, hparams, self.context).to(self.device)
        self.optimizer = build_optimizer(config, self.algorithm.trainable_parameters())
        self.augment_generator = torch.Generator(device=self.device)
        self.augment_generator.manual_seed(config.seed)
        self.augmenter = BatchAugmenter(
            self.data.normalizer.to(self.device),
            AugmentConfig(translate=config.translate, flip=config.flip, noise=config.noise),
            self.augment_generator,
        )
        self.step = 0
        self.metrics: list[dict[str, Any]] = []
        self.sums = {"class_loss": 0.0, "consistency_loss": 0.0, "count": 0}
        self.wall_time_before = 0.0
        self.checkpoint_step = 0  # the step of the newest checkpoint on disk (0: none yet)
        if resume:
            self._restore(load_checkpoint(self.folder.checkpoint))

    # -- one step -------------------------------------------------------------------------------
    def make_batch(self, step: int) -> Batch:
        labeled, unlabeled = self.sampler.batch(step)
        index = torch.from_numpy(np.concatenate([labeled, unlabeled])).to(self.device)
        y = self.data.pool_labels[index].clone()
        y[len(labeled) :] = NO_LABEL
        images = self.data.pool[index]
        return Batch(x_student=self.augmenter(images), x_teacher=self.augmenter(images), y=y, index=index)

    def train_step(self, step: int) -> dict[str, float]:
        algorithm = self.algorithm
        lr = apply_schedule(self.optimizer, self.config, step)
        batch = self.make_batch(step)
        output = algorithm.student(batch.x_student)
        logits = class_logits(output)
        class_loss = masked_cross_entropy(logits, batch.y)
        weight = algorithm.consistency_weight(step)
        targets = algorithm.teacher_targets(batch, logits)
        if targets is None:
            consistency = torch.zeros((), device=self.device)
        else:
            consistency = algorithm.consistency_loss(consistency_logits(output), class_logits(targets), batch)
        loss = class_loss + weight * consistency
        auxiliary = algorithm.auxiliary_loss(output)
        if auxiliary is not None:
            loss = loss + auxiliary
        if not bool(torch.isfinite(loss)):
            terms = {"class_loss": class_loss.item(), "consistency_loss": consistency.item()}
            if auxiliary is not None:
                terms["auxiliary_loss"] = auxiliary.item()
            raise DivergenceError(step + 1, {**terms, "consistency_weight": weight})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        algorithm.post_step(
            StepInfo(
                step=step + 1,
                total_steps=self.config.steps,
                epoch=self.sampler.epochs_done(step + 1),
                epoch_ended=self.sampler.epoch_ends_after(step),
                batch=batch,
                student_logits=logits.detach(),
            )
        )
        return {"class_loss": class_loss.item(), "consistency_loss": consistency.item(), "weight": weight, "lr": lr}

    # -- evaluation and state -------------------------------------------------------------------
    def evaluate(self) -> tuple[dict[str, float], dict[str, float]]:
        data = self.data
        val, test = {}, {}
        for name, model in self.algorithm.eval_models().items():
            val[name] = error_rate(model, data.val_images, data.val_labels, data.normalizer) if len(
                data.val_images
            ) else None
            test[name] = error_rate(model, data.test_images, data.test_labels, data.normalizer)
        return val, test

    def _state(self, wall_time: float) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "algo": self.config.algo,
            "config": self.config.to_json(),
            "step": self.step,
            "algorithm": self.algorithm.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "metrics": self.metrics,
            "sums": self.sums,
            "wall_time_s": wall_time,
            "rng": capture_rng_states(self.augment_generator),
        }

    def _restore(self, state: Any) -> None:
        path = self.folder.checkpoint
        missing = sorted(CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else sorted(CHECKPOINT_KEYS)
        if missing:
            raise UserInputError(
                f"checkpoint {path} is not an ssl-bench checkpoint (missing {', '.join(missing)}); "
                f"valid: a checkpoint.pt written by ssl-bench run"
            )
        if state["format"] != CHECKPOINT_FORMAT:
            raise UserInputError(
                f"checkpoint {path} has format {state['format']!r}; this version reads format {CHECKPOINT_FORMAT}"
            )
        if state["algo"] != self.config.algo:
            raise UserInputError(f"checkpoint {path} is from algorithm {state['algo']!r}, not {self.config.algo!r}")
        saved = state["config"] if isinstance(state["config"], dict) else {}
        differing = config_differences(saved, self.config.to_json())
        if differing:
            raise UserInputError(
                f"checkpoint {path} was written by a run whose config differs in {', '.join(differing)}; "
                f"valid: the config it was written with"
            )
        if not isinstance(state["step"], int) or not 0 <= state["step"] <= self.config.steps:
            raise UserInputError(
                f"checkpoint {path} is at step {state['step']}, beyond --steps {self.config.steps}; "
                f"valid: --steps {state['step']} or more"
            )
        try:
            self.algorithm.load_state_dict(state["algorithm"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = self.checkpoint_step = state["step"]
            self.metrics = list(state["metrics"])
            self.sums = dict(state["sums"])
            self.wall_time_before = float(state["wall_time_s"])
            restore_rng_states(state["rng"], self.augment_generator)
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
            # load_state_dict puts a header line first and the actual mismatch on the next one.
            detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
            raise UserInputError(f"checkpoint {path} does not fit this run: {detail[:200]}") from None

    def save_checkpoint(self, wall_time: float) -> None:
        save_checkpoint(self.folder.checkpoint, self._state(wall_time))
        self.checkpoint_step = self.step

    # -- the loop -------------------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
        """Train to ``config.steps``; returns final.json's content, or ``{}`` when ``should_stop`` ended
        the run early (after writing a checkpoint of the last finished step)."""
        config, folder = self.config, self.folder
        folder.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder.config, config.to_json())
        atomic_write_json(folder.split, self.data.split.to_json())
        if self.step > 0:
            # A killed run may have left temporary files, and metrics rows from evaluations after
            # its last checkpoint: the resumed run repeats those steps, so the rows start from the
            # checkpoint's own list.
            for stale in folder.path.glob(".*.tmp"):
                stale.unlink()
            write_jsonl(folder.metrics, self.metrics)
        started = time.perf_counter()
        self.algorithm.train()
        while self.step < config.steps:
            values = self.train_step(self.step)
            self.step += 1
            self.sums["class_loss"] += values["class_loss"]
            self.sums["consistency_loss"] += values["consistency_loss"]
            self.sums["count"] += 1
            if self.step % config.eval_every == 0 or self.step == config.steps:
                self._record_evaluation(values)
            wall_time = self.wall_time_before + time.perf_counter() - started
            if progress is not None:
                progress(self.step, values)
            stopping = should_stop is not None and self.step < config.steps and should_stop()
            if stopping or self.step % config.checkpoint_every == 0 or self.step == config.steps:
                self.save_checkpoint(wall_time)
            if stopping:
                return {}
        final = self._final(self.wall_time_before + time.perf_counter() - started)
        atomic_write_json(folder.final, final)
        return final

    def _record_evaluation(self, values: dict[str, float]) -> None:
        val, test = self.evaluate()
        count = max(1, self.sums["count"])
        row = {
            "step": self.step,
            "class_loss": self.sums["class_loss"] / count,
            "consistency_loss": self.sums["consistency_loss"] / count,
            "consistency_weight": values["weight"],
            "lr": values["lr"],
            "val_error": val,
            "test_error": test,
        }
        self.sums = {"class_loss": 0.0, "consistency_loss": 0.0, "count": 0}
        self.metrics.append(row)
        write_jsonl(self.folder.metrics, self.metrics)

    def _final(self, wall_time: float) -> dict[str, Any]:
        last = self.metrics[-1]
        return {
            "algo": self.config.algo,
            "dataset": self.config.dataset,
            "labels": self.config.labels,
            "seed": self.config.seed,
            "steps": self.config.steps,
            "backbone": self.config.backbone,
            "split": self.data.split.name,
            "wall_time_s": round(wall_time, 3),
            "test_error": last["test_error"],
            "val_error": last["val_error"],
            "best_val": best_by_validation(self.metrics),
        }


