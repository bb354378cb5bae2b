"""One run on two CPU processes (gloo): the ranks agree, stay identical, match one process, write one
folder, stop together and resume exactly under torchrun.

The spawned workers init the gloo group themselves (the trainer reuses it); the last test starts
``python -m torch.distributed.run`` as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_toolkit.algorithm import StepInfo
from ssl_toolkit.cli import main
from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.distributed import SINGLE_PROCESS, Ranks, rank_seed
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.registry import list_algorithms
from ssl_toolkit.testing import TINY_RUN
from ssl_toolkit.trainer import DivergenceError, Trainer

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
RUN_FILES = {"config.json", "split.json", "metrics.jsonl", "checkpoint.pt", "final.json"}
# 96 unlabeled images, 24 per step: a pass over the unlabeled stream every 4 steps, so 8 steps
# fold Temporal Ensembling's buffer twice.
SHORT = {**TINY_RUN, "steps": 8, "eval_every": 8, "unlabeled_pool": 96, "device": "cpu"}
# The algorithms that draw no random numbers of their own: with deterministic views (no
# translation, noise or flip) and a net without batch norm or dropout, two ranks compute the
# one-process gradients up to the order of float sums.
DETERMINISTIC_ALGORITHMS = ("supervised", "pi_model", "temporal_ensembling", "mean_teacher")
# Largest difference of any parameter or buffer between the 2-rank and the 1-process training
# (8 SGD steps, lr 0.1): measured 3e-8 (float sums in another order), while training moves the
# weights by 0.05 to 0.25.
MATCH_TOLERANCE = 1e-6

NO_BATCHNORM_PLUGIN = textwrap.dedent(
    '''
    from torch import nn

    from ssl_toolkit.backbones import register_backbone


    @register_backbone
    def mlp_without_batchnorm(pretrained=False, in_chans=1, num_classes=10, **kwargs):
        """8x8 images -> 32 tanh units -> logits: no batch norm, no dropout."""
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 64, 32), nn.Tanh(), nn.Linear(32, num_classes))
    '''
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(worker, *args) -> None:
    """Run ``worker(rank, port, *args)`` on two processes joined in one gloo group."""
    mp.spawn(_in_group, args=(free_port(), worker, args), nprocs=WORLD, join=True)


def _in_group(rank: int, port: int, worker, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        worker(rank, *args)
    finally:
        dist.destroy_process_group()


# -- spawned workers ----------------------------------------------------------------------------
def _every_check(rank: int, tmp: str, plugin: str) -> None:
    """One spawn for every check: starting two processes costs more than their tiny runs."""
    _train_every_algorithm(rank, tmp)
    _diverge_on_rank_one(rank, tmp)
    _no_batchnorm_two_ranks_and_one(rank, tmp, plugin)


def _train_every_algorithm(rank: int, tmp: str) -> None:
    results = {}
    for algo in list_algorithms():
        # ``out`` is an execution setting: rank 1 gets another folder, which must never appear.
        config = resolve_run_config({**SHORT, "algo": algo, "out": f"{tmp}/rank{rank}/{algo}"})
        trainer = Trainer(config)
        final = trainer.run()
        split = trainer.data.split
        results[algo] = {
            "state": trainer.algorithm.state_dict(),
            "split": [torch.from_numpy(a) for a in (split.labeled, split.val, split.unlabeled)],
            "first_batch": [torch.from_numpy(a) for a in trainer.sampler.batch(0)],
            "final": final,
        }
    results["gathered"] = Ranks(rank, WORLD).all_gather(torch.arange(rank + 1))
    torch.save(results, f"{tmp}/rank{rank}.pt")


def _diverge_on_rank_one(rank: int, tmp: str) -> None:
    config = resolve_run_config({**SHORT, "algo": "mean_teacher", "out": f"{tmp}/diverged"})
    trainer = Trainer(config)
    if rank == 1:
        # Only rank 1's loss becomes NaN, at 0-based step 3.
        weight = trainer.algorithm.consistency_weight
        trainer.algorithm.consistency_weight = lambda step: float("nan") if step == 3 else weight(step)
    try:
        trainer.run()
        step = None
    except DivergenceError as error:
        step = error.step
    Path(f"{tmp}/diverged-rank{rank}.json").write_text(json.dumps({"step": step, "params": float(
        sum(p.double().sum() for p in trainer.algorithm.student.parameters()))}))


def _no_batchnorm_two_ranks_and_one(rank: int, tmp: str, plugin: str) -> None:
    results = {}
    for algo in DETERMINISTIC_ALGORITHMS:
        values = {**SHORT, "algo": algo, "plugins": [plugin], "backbone": "mlp_without_batchnorm", "translate": 0,
                  "noise": 0.0, "flip": False, "optimizer": "sgd", "lr": 0.1}
        two = Trainer(resolve_run_config({**values, "out": f"{tmp}/two/{algo}"}))
        two.run()
        if rank == 0:
            one = Trainer(resolve_run_config({**values, "out": f"{tmp}/one/{algo}"}), ranks=SINGLE_PROCESS)
            start = {k: v.clone() for k, v in one.algorithm.state_dict().items()}
            one.run()
            results[algo] = {"two": two.algorithm.state_dict(), "one": one.algorithm.state_dict(), "start": start,
                             "metrics": [t.folder.metrics.read_text() for t in (two, one)]}
    if rank == 0:
        torch.save(results, f"{tmp}/match.pt")


# -- tests --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """The folder where the two spawned ranks left their runs and results."""
    tmp = tmp_path_factory.mktemp("two_ranks")
    plugin = tmp_path_factory.mktemp("plugin") / "no_batchnorm_plugin.py"
    plugin.write_text(NO_BATCHNORM_PLUGIN)
    spawn(_every_check, str(tmp), str(plugin))
    return tmp


@pytest.fixture(scope="module")
def every_algorithm_on_two_ranks(two_ranks) -> tuple[Path, list[dict]]:
    return two_ranks, [torch.load(two_ranks / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_ranks_draw_the_same_split_and_disjoint_shards_of_each_batch(every_algorithm_on_two_ranks):
    _, ranks = every_algorithm_on_two_ranks
    for algo in list_algorithms():
        zero, one = ranks[0][algo], ranks[1][algo]
        assert all(torch.equal(a, b) for a, b in zip(zero["split"], one["split"], strict=True)), algo
        for part_zero, part_one in zip(zero["first_batch"], one["first_batch"], strict=True):
            assert len(part_zero) == len(part_one) > 0
            assert not set(part_zero.tolist()) & set(part_one.tolist())


def test_every_algorithm_ends_with_the_same_weights_teacher_and_buffers_on_every_rank(every_algorithm_on_two_ranks):
    _, ranks = every_algorithm_on_two_ranks
    for algo in list_algorithms():
        zero, one = ranks[0][algo]["state"], ranks[1][algo]["state"]
        assert zero.keys() == one.keys()
        differing = [key for key in zero if not torch.equal(zero[key], one[key])]
        assert not differing, f"{algo}: {differing}"
        assert not any(key.startswith("module.") or ".module." in key for key in zero), algo
        assert ranks[0][algo]["final"] == ranks[1][algo]["final"]
        assert ranks[0][algo]["final"]["world_size"] == WORLD


def test_temporal_ensembling_folds_every_rank_s_predictions_into_one_buffer(every_algorithm_on_two_ranks):
    _, ranks = every_algorithm_on_two_ranks
    unlabeled = ranks[0]["temporal_ensembling"]["split"][2]
    for rank in ranks:
        state = rank["temporal_ensembling"]["state"]
        # Two passes over the 96 unlabeled images, each image folded in both: every rank holds the
        # predictions of both shards, not only its own half.
        assert state["fold_count"][unlabeled].tolist() == [2] * len(unlabeled)
        assert int(state["fold_count"].sum()) == 2 * len(unlabeled)
        assert torch.all(state["ensemble"][unlabeled].sum(dim=1) > 0.5)


def test_only_rank_zero_writes_and_its_folder_holds_exactly_the_run_files(every_algorithm_on_two_ranks):
    tmp, _ = every_algorithm_on_two_ranks
    assert not (tmp / "rank1").exists()
    assert sorted(p.name for p in (tmp / "rank0").iterdir()) == sorted(list_algorithms())
    for algo in list_algorithms():
        assert {p.name for p in (tmp / "rank0" / algo).iterdir()} == RUN_FILES
    # Nothing else either: the other runs' folders and the workers' result files.
    assert sorted(p.name for p in tmp.iterdir()) == ["diverged", "diverged-rank0.json", "diverged-rank1.json",
                                                    "match.pt", "one", "rank0", "rank0.pt", "rank1.pt", "two"]


def test_gather_concatenates_every_rank_s_rows_in_rank_order_and_is_the_identity_alone(every_algorithm_on_two_ranks):
    _, ranks = every_algorithm_on_two_ranks
    for rank in ranks:
        assert rank["gathered"].tolist() == [0, 0, 1]
    rows = torch.arange(3)
    assert SINGLE_PROCESS.all_gather(rows) is rows
    info = StepInfo(steps_done=1, epoch_ended=False, batch=None, student_logits=rows)
    assert info.gather(rows) is rows


def test_a_loss_that_is_not_finite_on_one_rank_stops_every_rank_at_that_step(two_ranks):
    outcomes = [json.loads((two_ranks / f"diverged-rank{r}.json").read_text()) for r in range(WORLD)]
    assert [o["step"] for o in outcomes] == [4, 4]
    assert outcomes[0]["params"] == outcomes[1]["params"]  # neither took the NaN step
    assert not (two_ranks / "diverged" / "final.json").exists()


def test_a_net_without_batch_norm_trains_on_two_ranks_as_on_one_process(two_ranks):
    results = torch.load(two_ranks / "match.pt", weights_only=False)
    for algo in DETERMINISTIC_ALGORITHMS:
        two, one, start = results[algo]["two"], results[algo]["one"], results[algo]["start"]
        floating = [key for key in one if one[key].is_floating_point()]
        largest = max(float((two[key] - one[key]).abs().max()) for key in floating)
        moved = max(float((one[key] - start[key]).abs().max()) for key in floating)
        assert largest < MATCH_TOLERANCE, f"{algo}: the 2-rank weights differ by {largest}"
        assert moved > 1000 * MATCH_TOLERANCE, f"{algo}: training moved the weights by only {moved}"
        rows_two, rows_one = ([json.loads(line) for line in m.splitlines()] for m in results[algo]["metrics"])
        for row_two, row_one in zip(rows_two, rows_one, strict=True):
            # The logged losses are the global batch's: the mean of the two shares' losses.
            assert row_two["class_loss"] == pytest.approx(row_one["class_loss"], rel=1e-5)


def test_a_global_batch_that_the_processes_cannot_share_equally_is_refused(tmp_path):
    config = resolve_run_config({**SHORT, "algo": "supervised", "batch_size": 31, "labeled_batch_size": 7,
                                 "out": str(tmp_path / "run")})
    with pytest.raises(UserInputError, match=r"--batch-size 31 and --labeled-batch-size 7 are global .* divisible "
                                             r"by 2; valid: e\.g\. --batch-size 32 --labeled-batch-size 8"):
        Trainer(config, ranks=Ranks(0, WORLD))
    assert not (tmp_path / "run").exists()


def test_sync_bn_on_the_cpu_is_refused_in_one_line(tmp_path):
    config = resolve_run_config({**SHORT, "algo": "supervised", "sync_bn": True, "out": str(tmp_path / "run")})
    with pytest.raises(UserInputError, match="SyncBatchNorm runs only on GPUs"):
        Trainer(config, ranks=Ranks(0, WORLD))


def test_a_checkpoint_continues_only_under_the_number_of_processes_that_wrote_it(tmp_path):
    out = tmp_path / "run"
    config = resolve_run_config({**SHORT, "algo": "supervised", "steps": 4, "out": str(out)})
    Trainer(config).run()
    with pytest.raises(UserInputError, match=r"written by a run on 1 process\(es\) and this one has 2.*resume it "
                                             r"as one process \(without torchrun\)"):
        Trainer(config, resume=True, ranks=Ranks(0, WORLD)).check_before_training()


def test_each_rank_draws_its_own_augmentation_and_dropout_stream_and_rank_zero_keeps_the_seed():
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, rank) for rank in range(8)}) == 8
    assert rank_seed(7, 1) == rank_seed(7, 1) != rank_seed(8, 1)


# -- under torchrun -----------------------------------------------------------------------------
TORCHRUN_RUN = ["--algo", "mean_teacher", "--dataset", "digits", "--labels", "50", "--steps", "120", "--eval-every",
                "20", "--checkpoint-every", "7", "--batch-size", "32", "--labeled-batch-size", "8", "--threads", "1",
                "--quiet"]


def torchrun(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
               "-m", "ssl_toolkit", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(folder: Path) -> tuple[str, dict]:
    final = json.loads((folder / "final.json").read_text())
    final.pop("wall_time_s")
    return (folder / "metrics.jsonl").read_text(), final


@pytest.mark.e2e
def test_sigterm_to_torchrun_stops_every_rank_with_a_checkpoint_and_resuming_under_torchrun_is_exact(tmp_path):
    reference = torchrun("run", *TORCHRUN_RUN, "--out", str(tmp_path / "reference"), cwd=tmp_path)
    stopped = torchrun("run", *TORCHRUN_RUN, "--out", str(tmp_path / "stopped"), cwd=tmp_path)
    checkpoint = tmp_path / "stopped" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and stopped.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped.send_signal(signal.SIGTERM)
    _, stderr = stopped.communicate(timeout=120)
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < step < 120, stderr
    assert f"stopped by SIGTERM after step {step} (checkpoint written); continue with: torchrun --nproc_per_node 2 " \
           f"-m ssl_toolkit resume {tmp_path / 'stopped'}" in stderr
    assert stderr.count("stopped by SIGTERM") == 1  # rank 0 alone reports

    saved = checkpoint.read_bytes()
    assert main(["resume", str(tmp_path / "stopped"), "--quiet"]) == 2  # one process: refused, nothing changed
    assert checkpoint.read_bytes() == saved

    resumed = torchrun("resume", str(tmp_path / "stopped"), "--quiet", cwd=tmp_path)
    for process in (resumed, reference):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    assert outcome(tmp_path / "stopped") == outcome(tmp_path / "reference")
    for folder in ("stopped", "reference"):
        assert {p.name for p in (tmp_path / folder).iterdir()} == RUN_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference", "stopped"]
