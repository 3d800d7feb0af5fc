"""Bad input is refused before any work: a message naming the option and the fix, a non-zero
exit, and nothing in the run folder but Hydra's config record and the log.

The common cases go through the real CLI (`python -m aelab`); the checks that need no
torch exit in about a second there. The rest call `run(cfg)` in-process.
"""

import struct
from pathlib import Path

import pytest

from aelab.errors import ConfigError, DataError, RunFolderError
from aelab.training.folder import RunFolderLock
from aelab.training.run import run

from conftest import TINY, compose_config, run_cli


def written(folder: Path) -> set[str]:
    """Files in a run folder other than Hydra's config record (.hydra/) and the log."""
    if not folder.exists():
        return set()
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
    }


def refused(tmp_path: Path, *overrides: str) -> str:
    """Run the CLI; assert exit 2, an `aelab: error:` line and an empty run folder; the message."""
    proc = run_cli(*overrides, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("aelab: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert written(tmp_path / "run") == set()
    assert list(tmp_path.iterdir()) == [tmp_path / "run"]  # no outputs/, lightning_logs/, data/
    return proc.stderr


# --- Hydra's own refusals: exit 1, nothing created at all ---------------------------------


def test_unknown_config_key_is_refused_by_struct_mode(tmp_path):
    # a key close to one a config has (optimizer.lrr) is aelab's to refuse, with "did you
    # mean" (test_cli_reliability); one close to none is Hydra's
    proc = run_cli("optimizer.zzz=0.1", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Could not override 'optimizer.zzz'" in proc.stderr
    assert "Key 'zzz' is not in struct" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_misspelt_group_option_lists_the_choices(tmp_path):
    proc = run_cli("loss=bcee", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("aelab: error: loss=bcee: no such loss option; the loss options")
    assert " bce, " in proc.stderr
    assert list(tmp_path.iterdir()) == []


# --- aelab's refusals through the CLI: exit 2 ----------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=0", "optimizer.lr=0 must be a positive number, e.g. optimizer.lr=0.001."),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 must be a positive number"),
        ("data.batch_size=0", "data.batch_size=0 must be a positive integer, e.g. data.batch_size"),
        ("model.hidden=[]", "model.hidden=[] must be a non-empty list of positive integers, "
                            "e.g. model.hidden=[100,50]."),
        ("model.hidden=[100,0]", "model.hidden=[100, 0] must be a non-empty list"),
        ("steps_per_call=0", "steps_per_call=0 must be an integer >= 1 (1: every step)."),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 must be a number >= 0"),
        ("trainer.gradient_clip_algorithm=max", "must be norm or value"),
        ("trainer.accumulate_grad_batches=0", "accumulate_grad_batches=0 must be an integer >= 1"),
        ("trainer.devices=2", "aelab trains one run on one device"),
        ("+trainer.strategy=ddp", "remove +trainer.strategy=ddp (or set trainer.strategy=auto)"
                                  ", and run many runs at once"),
        ("+trainer.val_check_interval=0.5", "set steps_per_call=1 to validate within an epoch"),
    ],
)
def test_non_positive_values_are_refused(tmp_path, override, message):
    assert message in refused(tmp_path, "data=synthetic", override)


def test_a_step_counting_callback_is_refused_when_steps_jump(tmp_path):
    message = refused(tmp_path, "data=synthetic",
                      "+callbacks.ckpt._target_=lightning.pytorch.callbacks.ModelCheckpoint",
                      "+callbacks.ckpt.every_n_train_steps=5")
    assert "callbacks.ckpt.every_n_train_steps=5: the global step moves by" in message
    assert "set steps_per_call=1" in message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+l2_penality=1e-3", "l2_penality is not read by any part of aelab (did you mean "
                              "l2_penalty?)"),
        ("+trainer.max_epoch=3", "(did you mean trainer.max_epochs?)"),
        ("+optimizer.betass=[0.9,0.99]", "(did you mean optimizer.betas?)"),
        ("+callbacks.reconstructions.n_imagez=4", "(did you mean callbacks.reconstructions."
                                                  "n_images?)"),
    ],
)
def test_keys_nothing_reads_are_refused(tmp_path, override, message):
    assert message in refused(tmp_path, "data=synthetic", override)


def test_notes_are_accepted_and_known_extra_keys_pass(tmp_path):
    from aelab.config.keys import check_keys

    extra = ["+notes.reason=foo", "+trainer.benchmark=false", "+optimizer.betas=[0.9,0.99]"]
    check_keys(compose_config([*TINY, *extra], tmp_path / "run"))


def test_an_aelab_refusal_inside_instantiate_reads_like_every_other(tmp_path):
    stderr = refused(tmp_path, "data=synthetic", "loss.reduction=bogus")
    assert stderr.startswith("aelab: error: loss.reduction=")
    assert "Error in call to target" not in stderr


def test_batch_larger_than_the_dataset_is_refused(tmp_path):
    stderr = refused(tmp_path, "data=synthetic", "data.train_size=100", "data.batch_size=128")
    assert "data.batch_size=128 is larger than the training set (100 images)" in stderr
    assert "lower data.batch_size" in stderr


def test_data_root_that_is_a_file_is_refused(tmp_path):
    not_a_dir = tmp_path / "data.txt"
    not_a_dir.write_text("not a folder")
    proc = run_cli(f"data.root={not_a_dir}", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"data.root={not_a_dir} is not a directory; point data.root at a folder" in proc.stderr
    assert written(tmp_path / "run") == set()


def write_idx(path: Path, n: int, rows: int = 28, cols: int = 28, magic: int = 2051,
              cut: int = 0) -> None:
    """An IDX image file (labels: magic 2049, one byte an image); `cut` bytes short of its
    header's promise (negative: extra bytes)."""
    header = struct.pack(">IIII", magic, n, rows, cols) if magic == 2051 else \
        struct.pack(">II", magic, n)
    raw = header + bytes(n * rows * cols if magic == 2051 else n)
    raw = raw[: len(raw) - cut] if cut >= 0 else raw + bytes(-cut)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def fake_mnist(root: Path, **train: int) -> Path:
    """MNIST/raw under root with good test files and a train image file built from `train`."""
    raw = root / "MNIST" / "raw"
    write_idx(raw / "t10k-images-idx3-ubyte", 20)
    write_idx(raw / "t10k-labels-idx1-ubyte", 20, magic=2049)
    write_idx(raw / "train-labels-idx1-ubyte", 100, magic=2049)
    write_idx(raw / "train-images-idx3-ubyte", **{"n": 100, **train})
    return raw


def test_truncated_dataset_file_is_refused_through_the_cli(tmp_path):
    raw = fake_mnist(tmp_path / "root", cut=1000)
    proc = run_cli(f"data.root={tmp_path / 'root'}", "data.download=false", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{raw}: train-images-idx3-ubyte and train-labels-idx1-ubyte cannot be read" \
        in proc.stderr
    assert "truncated or corrupt" in proc.stderr and "download them again" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert written(tmp_path / "run") == set()


@pytest.mark.parametrize(
    "train", [{"magic": 2049}, {"n": 0, "cut": 10}, {"n": 100, "cut": -5}],
    ids=["labels-magic", "header-cut", "trailing-bytes"],
)
def test_corrupt_dataset_files_are_refused(tmp_path, train):
    fake_mnist(tmp_path / "root", **train)
    cfg = compose_config([f"data.root={tmp_path / 'root'}", "data.download=false"],
                         tmp_path / "run")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte and train-labels-idx1-ubyte "
                       r"cannot be read \(\w+Error: .+\): a file is truncated or corrupt"):
        run(cfg)
    assert written(tmp_path / "run") == set()


# --- in-process: the remaining refusals ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=bce", "normalization=standard"], "loss=bce needs targets in [0, 1]"),
        (["optimizer.lr=fast"], "optimizer.lr=fast must be a positive number"),
        (["optimizer.lr=nan"], "optimizer.lr=nan must be a positive number"),
        (["data.eval_batch_size=-1"], "data.eval_batch_size=-1 must be a positive integer"),
        (["data.val_size=0"], "data.val_size=0 must be a positive integer"),
        (["data.train_size=0"], "data.train_size=0 must be a positive integer, or null"),
        (["model.hidden=100"], "model.hidden=100 must be a non-empty list"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be an integer >= 1"),
        (["seed=-1"], "seed=-1 must be an integer in [0, 4294967295]"),
        (["threads=0"], "threads=0 must be a positive integer"),
        (["l2_penalty=-0.1"], "l2_penalty=-0.1 must be a number >= 0"),
        (["resume=maybe"], "resume=maybe must be true or false"),
        (["init=normal", "init.std=0"], "init.std=0 must be positive"),
        (["trainer.accelerator=tpu"], "trainer: Lightning refuses these trainer options"),
    ],
)
def test_other_bad_values_are_refused_in_process(tmp_path, overrides, message):
    cfg = compose_config([*TINY, *overrides], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert message in str(err.value)
    assert written(tmp_path / "run") == set()


def test_a_run_folder_in_use_is_refused(tmp_path):
    folder = tmp_path / "run"
    with RunFolderLock(folder), pytest.raises(RunFolderError, match="in use by another"):
        run(compose_config(TINY, folder))
    assert written(folder) == set()  # the lock file goes with its holder
