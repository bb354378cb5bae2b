"""The one generic training loop, used by every algorithm.

Over 400 lines as one cohesive job: a run's set-up, its step, evaluation, checkpoint and resume,
which share the trainer's state and read best side by side.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ssl_toolkit.algorithm import Batch, DataContext, SSLAlgorithm, StepInfo
from ssl_toolkit.backbones import create_backbone
from ssl_toolkit.checkpoint import capture_rng_states, load_checkpoint, restore_rng_states, save_checkpoint
from ssl_toolkit.config import EXECUTION_KEYS, RESUMABLE_KEYS, RunConfig, differences
from ssl_toolkit.data.augment import AugmentConfig, ViewBuilder
from ssl_toolkit.data.sampling import TwoStreamSampler
from ssl_toolkit.distributed import Ranks, digest, join, rank_seed
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.evaluation import best_by_validation, error_rate
from ssl_toolkit.losses import NO_LABEL, masked_cross_entropy
from ssl_toolkit.observers import RunObserver
from ssl_toolkit.optim import apply_schedule, build_optimizer
from ssl_toolkit.registry import get_algorithm
from ssl_toolkit.results import RunFolder, atomic_write_json, write_jsonl
from ssl_toolkit.run_data import prepare_data


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the loss terms.

    Raised before the optimizer step, so the parameters, the last checkpoint and metrics.jsonl
    all still hold finite values; ``step`` is the 1-based number of the step whose loss was not finite.
    """

    def __init__(self, step: int, terms: dict[str, float]) -> None:
        self.step = step
        self.terms = terms
        listed = ", ".join(f"{name}={value}" for name, value in terms.items())
        super().__init__(f"loss is not finite at step {step}: {listed}")


def pick_device(name: str, ranks: Ranks | None = None) -> torch.device:
    """The training device; under torchrun on GPUs, each process's own GPU (its ``LOCAL_RANK``)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA device is available here; valid: auto, cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and ranks is not None and ranks.is_distributed:
        return torch.device("cuda", ranks.local_rank)
    return torch.device(name)


def check_world_size(config: RunConfig, world_size: int, device: torch.device) -> None:
    """Refuse a global batch that the processes cannot share equally, and --sync-bn where torch cannot run it."""
    if world_size == 1:
        return
    batch, labeled = config.batch_size, config.labeled_batch_size
    if batch % world_size or labeled % world_size:
        def fit(n: int) -> int:
            return max(world_size, round(n / world_size) * world_size)

        raise UserInputError(
            f"--batch-size {batch} and --labeled-batch-size {labeled} are global (per optimizer step, over all "
            f"{world_size} processes), so each must be divisible by {world_size}; valid: e.g. --batch-size "
            f"{fit(batch)} --labeled-batch-size {fit(labeled)}"
        )
    if config.sync_bn and device.type != "cuda":
        raise UserInputError(f"--sync-bn: torch's SyncBatchNorm runs only on GPUs, and this run trains on the "
                             f"{device.type}; drop --sync-bn")


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward passes' autocast context: fp32 runs without one."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


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


CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)  # format 1 has no "preprocess": its statistics are refit on resume
CHECKPOINT_KEYS = frozenset(
    {"format", "algo", "config", "step", "algorithm", "optimizer", "metrics", "sums", "wall_time_s", "rng"}
)
# Optional keys: "world_size" (1 when missing) and, from a run on several processes, "rng_by_rank".


class Trainer:
    """Runs one configured training: data, split, model, loop, evaluation, checkpoints, results.

    Everything is prepared and checked in the constructor, so bad input fails before any step.
    ``step`` is the number of optimizer steps done (the next step's 0-based index).

    Under torchrun (``ranks``, by default from :func:`ssl_toolkit.distributed.join`) every process
    builds the same split and initial weights, trains on its share of each global batch, and
    averages gradients and the evaluated models' buffers after each step; only rank 0 evaluates
    and writes the run folder.

    Example:
        >>> trainer = Trainer(resolve_run_config({"dataset": "digits", "steps": 100}))
        >>> final = trainer.run()
    """

    def __init__(self, config: RunConfig, resume: bool = False, ranks: Ranks | None = None) -> None:
        self.config = config
        self.folder = RunFolder(config.out)
        self.ranks = ranks = join(config.device) if ranks is None else ranks
        # One thread unless asked: torch's default (every core) oversubscribes a shared machine and
        # makes results depend on the machine.
        torch.set_num_threads(config.threads or 1)
        seed_everything(config.seed)
        if config.deterministic:
            use_deterministic_algorithms()
        self.device = pick_device(config.device, ranks)
        check_world_size(config, ranks.world_size, self.device)
        if self.device.type == "cuda" and not config.deterministic:
            # Fixed input shapes every step: let cuDNN pick its fastest kernels once.
            torch.backends.cudnn.benchmark = True
        state = self._read_checkpoint() if resume else None
        self.data = prepare_data(config, self.device, state.get("preprocess") if state else None)
        split = self.data.split
        self.sampler = TwoStreamSampler(
            split.labeled, split.unlabeled, config.batch_size, config.labeled_batch_size, config.seed,
            rank=ranks.rank, world_size=ranks.world_size,
        )
        self.context = DataContext(
            num_classes=self.data.num_classes,
            pool_size=len(self.data.pool),
            total_steps=config.steps,
            labeled_share=config.labeled_batch_size / config.batch_size,
        )
        algorithm_cls = get_algorithm(config.algo)
        hparams = algorithm_cls.Config(**config.hparams)
        try:
            hparams.validate(self.context)
        except UserInputError:
            raise
        except ValueError as error:  # a plugin's own range check: still one line, naming the algorithm
            raise UserInputError(f"hyperparameters of {config.algo}: {error}") from None
        # A resumed run takes its weights from the checkpoint, not from the pretrained file.
        student = create_backbone(config.backbone, in_chans=self.data.pool.shape[1], num_classes=self.data.num_classes,
                                  pretrained_file=None if resume else config.pretrained_file)
        self.algorithm: SSLAlgorithm = algorithm_cls(student, hparams, self.context).to(self.device)
        if config.sync_bn and ranks.is_distributed:
            # In place below the algorithm: the same parameter and buffer names, so the same checkpoints.
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.algorithm)
        if ranks.rank > 0:
            # Every rank built the same initial weights from the run's seed; from here on (dropout)
            # each rank draws its own numbers. Rank 0 keeps the seed's stream, as one process does.
            torch.manual_seed(rank_seed(config.seed, ranks.rank))
        self.forward_seconds = self._check_model()
        if config.channels_last:
            self.algorithm.to(memory_format=torch.channels_last)
        if config.compile:
            # Module.compile keeps the parameters and state_dict keys, so checkpoints and the EMA
            # are the same with and without it.
            for model in self.algorithm.eval_models().values():
                model.compile()
        self.optimizer = build_optimizer(config, self.algorithm.trainable_parameters())
        # Only fp16 needs loss scaling; bf16 has fp32's exponent range.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.augment_generator = torch.Generator(device=self.device)
        self.augment_generator.manual_seed(rank_seed(config.seed, ranks.rank))
        augment = AugmentConfig(translate=config.translate, flip=config.flip, noise=config.noise)
        self.views = ViewBuilder(algorithm_cls.views, self.data.preprocess, augment, self.augment_generator)
        self._zero = torch.zeros((), device=self.device)
        self.step = 0
        self.metrics: list[dict[str, Any]] = []
        self.sums = {"class_loss": 0.0, "consistency_loss": 0.0, "count": 0}
        self.wall_time_before = 0.0
        self.checkpoint_step = 0  # the step of the newest checkpoint on disk (0: none yet)
        self.checked_before_training = False
        # Under torchrun the stop request is read inside each step, where the ranks exchange it.
        self.should_stop: Callable[[], bool] | None = None
        self.any_rank_stop = False
        # The number of processes that wrote the checkpoint: a rebuilt run (export, evaluate) may be
        # inspected in any number of processes, but only trained on in as many as wrote it.
        self.checkpoint_world_size = state.get("world_size", 1) if state is not None else ranks.world_size
        if state is not None:
            self._restore(state)

    def _check_model(self) -> float:
        """Forward one batch of the real images through the student, before anything is written.

        Eval mode and no gradient: no batch-norm statistic, random number or parameter changes, so
        the run is the same with or without the check. Returns the forward pass's seconds (for an ETA).
        """
        student = self.algorithm.student
        images = self.data.pool[: self.config.batch_size // self.ranks.world_size]
        started = time.perf_counter()
        student.eval()
        try:
            with torch.no_grad():
                logits = self.algorithm.class_logits(student(self.data.preprocess(images)))
        except RuntimeError as error:
            detail = str(error).splitlines()[0][:200]
            raise UserInputError(
                f"--backbone {self.config.backbone} cannot take this data set's {tuple(images.shape[1:])} images "
                f"({detail}); choose a backbone for this image size (ssl-bench list backbones) or --image-size"
            ) from None
        finally:
            student.train()
        if tuple(logits.shape) != (len(images), self.data.num_classes):
            raise UserInputError(f"--backbone {self.config.backbone} gives outputs shaped {tuple(logits.shape)}; "
                                 f"expected ({len(images)}, {self.data.num_classes}) class logits")
        return time.perf_counter() - started

    def estimated_seconds(self) -> float:
        """A rough estimate of the remaining training time from the model check's forward pass.

        A step costs about three forward passes (forward and backward) plus one for each further view.
        """
        passes = 3 + len(self.algorithm.views) - 1
        return self.forward_seconds * passes * (self.config.steps - self.step)

    def check_before_training(self) -> None:
        """Refuse to continue a checkpoint under another number of processes; under torchrun, refuse
        ranks started with different configs or drawing different splits, then give every rank rank
        0's weights and state. :meth:`run` calls it first; nothing is written before it passes."""
        if self.checked_before_training:
            return
        saved, world = self.checkpoint_world_size, self.ranks.world_size
        if saved != world:
            how = "as one process (without torchrun)" if saved == 1 else \
                f"under torchrun with {saved} processes in all (--nproc_per_node x --nnodes)"
            raise UserInputError(f"checkpoint {self.folder.checkpoint} was written by a run on {saved} process(es) "
                                 f"and this one has {world}; the data shards and random streams depend on the "
                                 f"number, so resume it {how}")
        if not self.ranks.is_distributed:
            self.checked_before_training = True
            return
        config = {key: value for key, value in self.config.to_json().items() if key not in EXECUTION_KEYS}
        split = self.data.split
        mine = torch.tensor([[digest(json.dumps(config, sort_keys=True)),
                              digest(split.name, split.labeled, split.val, split.unlabeled)]], device=self.device)
        for rank, (config_digest, split_digest) in enumerate(self.ranks.all_gather(mine).tolist()):
            if rank == 0:
                reference = (config_digest, split_digest)
            elif config_digest != reference[0]:
                raise UserInputError(f"torchrun rank {rank} was started with another run config than rank 0; "
                                     f"start every process with the same command")
            elif split_digest != reference[1]:
                raise UserInputError(
                    f"torchrun rank {rank} drew another split than rank 0 from seed {self.config.seed}: the "
                    f"{self.config.dataset} files differ between the nodes; give every node the same files"
                )
        self.ranks.broadcast_module(self.algorithm)
        self.checked_before_training = True

    # -- one step -------------------------------------------------------------------------------
    def make_batch(self, step_index: int) -> Batch:
        """The batch of step ``step_index`` (0-based): its rows, labels (-1 unlabeled) and declared views.

        The rows are a pure function of (seed, step_index); the views draw from the augmentation
        generator, so a resumed run rebuilds exactly the views an uninterrupted one would.
        """
        labeled, unlabeled = self.sampler.batch(step_index)
        index = torch.from_numpy(np.concatenate([labeled, unlabeled])).to(self.device)
        y = self.data.pool_labels[index].clone()
        y[len(labeled) :] = NO_LABEL
        views = self.views(self.data.pool[index])
        if self.config.channels_last:
            views = {name: x.contiguous(memory_format=torch.channels_last) for name, x in views.items()}
        return Batch(views, y, index, self.augment_generator, num_labeled=len(labeled))

    def train_step(self, step_index: int) -> dict[str, float]:
        """Take optimizer step ``step_index`` (0-based) and return its losses, weight and lr.

        The algorithm's hooks see the student's raw output; only :meth:`SSLAlgorithm.class_logits`
        tells the trainer which part of it is classification logits. A non-finite loss raises
        :class:`DivergenceError` before the optimizer step. Under torchrun the losses are the
        global batch's (the mean over ranks of their shares' losses), and :attr:`any_rank_stop` says
        whether any rank was asked to stop (one decision for all, taken in the step's one exchange).
        """
        algorithm = self.algorithm
        lr = apply_schedule(self.optimizer, self.config, step_index)
        batch = self.make_batch(step_index)
        weight = algorithm.consistency_weight(step_index)
        with autocast(self.config.precision, self.device):
            output = algorithm.student(batch.view(algorithm.student_view))
            logits = algorithm.class_logits(output)
            class_loss = masked_cross_entropy(logits, batch.y)
            targets = algorithm.teacher_targets(batch, output)
            consistency = self._zero if targets is None else algorithm.consistency_loss(output, targets, batch)
            auxiliary = algorithm.auxiliary_loss(output)
        loss = class_loss + weight * consistency
        if auxiliary is not None:
            loss = loss + auxiliary
        terms = torch.stack([loss, class_loss, consistency, self._zero if auxiliary is None else auxiliary]).float()
        if not self.ranks.is_distributed:
            # One host transfer per step: the NaN stop before the optimizer step needs the loss on the
            # host anyway, so the logged terms travel with it.
            values = terms.tolist()
            self._stop_if_not_finite(values, step_index, weight, auxiliary is not None)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.ranks.is_distributed:
            values, self.any_rank_stop, has_gradient = self._exchange_step_facts(terms.detach())
            self._stop_if_not_finite(values, step_index, weight, auxiliary is not None)
            self._average_gradients(has_gradient)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        algorithm.post_step(
            StepInfo(
                steps_done=step_index + 1,
                epoch_ended=self.sampler.epoch_ends_after(step_index),
                batch=batch,
                student_logits=logits.detach(),
                gather=self.ranks.all_gather,
            )
        )
        if self.ranks.is_distributed:
            self.ranks.average(self._model_buffers())
        _, class_value, consistency_value, _ = values
        return {"class_loss": class_value, "consistency_loss": consistency_value, "weight": weight, "lr": lr}

    @staticmethod
    def _stop_if_not_finite(values: list[float], step_index: int, weight: float, has_auxiliary: bool) -> None:
        total, class_value, consistency_value, auxiliary_value = values
        if not math.isfinite(total):
            terms = {"class_loss": class_value, "consistency_loss": consistency_value}
            if has_auxiliary:
                terms["auxiliary_loss"] = auxiliary_value
            raise DivergenceError(step_index + 1, {**terms, "consistency_weight": weight})

    def _optimized_parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _exchange_step_facts(self, terms: torch.Tensor) -> tuple[list[float], bool, list[float]]:
        """One small all-reduce per step: the loss terms (averaged over ranks: the global batch's
        losses, as the shares are equal), whether any rank was asked to stop, and which parameters
        got a gradient on any rank. So every rank takes the same NaN and stop decision at the same step.
        """
        asked = self.should_stop is not None and self.should_stop()
        flags = [float(asked)] + [float(p.grad is not None) for p in self._optimized_parameters()]
        facts = self.ranks.all_reduce_sum(torch.cat([terms, torch.tensor(flags, device=terms.device)])).tolist()
        world = self.ranks.world_size
        return [value / world for value in facts[:4]], facts[4] > 0, facts[5:]

    def _average_gradients(self, has_gradient: list[float]) -> None:
        """Average the gradients over ranks, as the global batch's loss would give them.

        A parameter without a gradient here but with one on another rank gets zeros first (its
        share's contribution); one without a gradient anywhere keeps none, as in one process.
        """
        gradients = []
        for parameter, count in zip(self._optimized_parameters(), has_gradient, strict=True):
            if count > 0:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                gradients.append(parameter.grad)
        self.ranks.average(gradients)

    def _model_buffers(self) -> list[torch.Tensor]:
        """The evaluated models' floating-point buffers (BatchNorm statistics), each once.

        Averaged over ranks after every step: each rank's statistics come from its own share of the
        batch; integer counters are the same on every rank already.
        """
        found: dict[int, torch.Tensor] = {}
        for model in self.algorithm.eval_models().values():
            for buffer in model.buffers():
                if buffer.is_floating_point():
                    found.setdefault(id(buffer), buffer)
        return list(found.values())

    # -- evaluation and state -------------------------------------------------------------------
    def evaluate(self) -> tuple[dict[str, float | None], dict[str, float]]:
        """Validation (None without a validation set) and test error in percent of each evaluated model."""
        data, logits_of = self.data, self.algorithm.class_logits
        val: dict[str, float | None] = {}
        test: dict[str, float] = {}
        with autocast(self.config.precision, self.device):
            for name, model in self.algorithm.eval_models().items():
                has_val = len(data.val_images) > 0
                val[name] = error_rate(model, data.val_images, data.val_labels, data.preprocess, logits_of) \
                    if has_val else None
                test[name] = error_rate(model, data.test_images, data.test_labels, data.preprocess, logits_of)
        return val, test

    def _state(self, wall_time: float, rng_by_rank: list[dict[str, Any]]) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "algo": self.config.algo,
            "config": self.config.to_json(),
            "step": self.step,
            "algorithm": self.algorithm.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "metrics": self.metrics,
            "sums": self.sums,
            "wall_time_s": wall_time,
            "rng": rng_by_rank[0],
            "preprocess": self.data.preprocess.state_dict(),
            "scaler": self.scaler.state_dict(),
            "world_size": self.ranks.world_size,
        }
        if self.ranks.is_distributed:
            state["rng_by_rank"] = rng_by_rank
        return state

    def _read_checkpoint(self) -> dict[str, Any]:
        """Load the checkpoint and check that it belongs to this run, before any data is read."""
        path = self.folder.checkpoint
        state = load_checkpoint(path)
        missing = sorted(CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else sorted(CHECKPOINT_KEYS)
        if missing:
            raise UserInputError(
                f"checkpoint {path} is not an ssl-bench checkpoint (missing {', '.join(missing)}); "
                f"valid: a checkpoint.pt written by ssl-bench run"
            )
        if state["format"] not in READABLE_FORMATS:
            raise UserInputError(
                f"checkpoint {path} has format {state['format']!r}; this version reads format "
                f"{' or '.join(map(str, READABLE_FORMATS))}"
            )
        if state["algo"] != self.config.algo:
            raise UserInputError(f"checkpoint {path} is from algorithm {state['algo']!r}, not {self.config.algo!r}")
        saved = state["config"] if isinstance(state["config"], dict) else {}
        found = differences(saved, self.config, ignore=RESUMABLE_KEYS)
        if found:
            raise UserInputError(
                f"checkpoint {path} was written by a run whose config differs in "
                f"{', '.join(d.key for d in found)}; valid: the config it was written with"
            )
        if not isinstance(state["step"], int) or not 0 <= state["step"] <= self.config.steps:
            raise UserInputError(
                f"checkpoint {path} is at step {state['step']}, beyond --steps {self.config.steps}; "
                f"valid: --steps {state['step']} or more"
            )
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.algorithm.load_state_dict(state["algorithm"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = self.checkpoint_step = state["step"]
            self.metrics = list(state["metrics"])
            self.sums = dict(state["sums"])
            self.wall_time_before = float(state["wall_time_s"])
            by_rank = state.get("rng_by_rank") or [state["rng"]]
            rng = by_rank[self.ranks.rank] if len(by_rank) == self.ranks.world_size else state["rng"]
            restore_rng_states(rng, self.augment_generator)
            if state.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
            # load_state_dict puts a header line first and the actual mismatch on the next one.
            detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
            raise UserInputError(f"checkpoint {self.folder.checkpoint} does not fit this run: {detail[:200]}") from None

    def save_checkpoint(self, wall_time: float) -> None:
        """Write the checkpoint (rank 0, with every rank's random states; every rank must call this)."""
        rng_by_rank = self.ranks.all_gather_objects(capture_rng_states(self.augment_generator))
        if self.ranks.is_main:
            save_checkpoint(self.folder.checkpoint, self._state(wall_time, rng_by_rank))
        self.checkpoint_step = self.step

    # -- the loop -------------------------------------------------------------------------------
    def run(self, observers: Sequence[RunObserver] = (), should_stop: Callable[[], bool] | None = None) -> dict:
        """Train to ``config.steps``; returns final.json's content, or ``{}`` when ``should_stop`` ended
        the run early (after writing a checkpoint of the last finished step).

        ``observers`` see every step and every evaluation (progress displays, loggers). Under torchrun
        every rank calls this; rank 0 evaluates and writes, and every rank returns rank 0's result.
        """
        self.check_before_training()
        for observer in observers:
            observer.on_start(self)
        try:
            return self._run(observers, should_stop)
        finally:
            for observer in observers:
                observer.on_end()

    def _run(self, observers: Sequence[RunObserver], should_stop: Callable[[], bool] | None) -> dict:
        config, folder, main = self.config, self.folder, self.ranks.is_main
        if main:
            folder.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder.config, config.to_json())
            atomic_write_json(folder.split, self.data.split.to_json())
        if self.step > 0 and main:
            # A killed run may have left temporary files, and metrics rows from evaluations after
            # its last checkpoint: the resumed run repeats those steps, so the rows start from the
            # checkpoint's own list.
            for stale in folder.path.glob(".*.tmp"):
                stale.unlink()
            write_jsonl(folder.metrics, self.metrics)
        started = time.perf_counter()
        self.algorithm.train()
        self.should_stop = should_stop
        while self.step < config.steps:
            values = self.train_step(self.step)
            self.step += 1
            self.sums["class_loss"] += values["class_loss"]
            self.sums["consistency_loss"] += values["consistency_loss"]
            self.sums["count"] += 1
            if main and (self.step % config.eval_every == 0 or self.step == config.steps):
                # The other ranks go on to the next step and wait for rank 0 in its first collective.
                row = self._record_evaluation(values)
                for observer in observers:
                    observer.on_evaluation(row)
            wall_time = self.wall_time_before + time.perf_counter() - started
            for observer in observers:
                observer.on_step(self.step, values)
            if self.ranks.is_distributed:
                stopping = self.step < config.steps and self.any_rank_stop
            else:
                stopping = should_stop is not None and self.step < config.steps and should_stop()
            if stopping or self.step % config.checkpoint_every == 0 or self.step == config.steps:
                self.save_checkpoint(wall_time)
            if stopping:
                return {}
        final = None
        if main:
            final = self._final(self.wall_time_before + time.perf_counter() - started)
            atomic_write_json(folder.final, final)
        return self.ranks.broadcast_object(final)

    def _record_evaluation(self, values: dict[str, float]) -> dict[str, Any]:
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
        return row

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
            "world_size": self.ranks.world_size,
            "wall_time_s": round(wall_time, 3),
            "test_error": last["test_error"],
            "val_error": last["val_error"],
            "best_val": best_by_validation(self.metrics),
        }
