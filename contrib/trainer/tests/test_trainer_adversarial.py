"""The adversarial tries on the trainer, kept: a diverged run and its rescue, processes racing for one run
directory, a flipped bit or a truncated or foreign file in every file the trainer reads, Ctrl-C inside a
checkpoint write, booleans and sizes that are not what they claim. Each ends in a clear error (exit 2) or
exit 130, never a traceback, and the rest keeps working."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes import cli
from diffusion_schemes_trainer import load_checkpoint, load_config, train
from diffusion_schemes_trainer.storage import LOCK_NAME, RunLock

SMALL = ["steps=4", "batch_size=16", "sampling_steps=2", "data.train_size=128", "data.eval_size=32",
         "model.hidden=8", "model.depth=1", "projections=8", "checkpoint_every=2", "log_every=1",
         "optimizer.warmup=0"]
CLI_SMALL = ["-q", *(a for item in SMALL for a in ("--set", item))]


@pytest.fixture(autouse=True)
def _registry(fresh_registry):
    """Every test sees the installed schemes only."""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("small-run") / "run"
    train(load_config(overrides=[*SMALL, "ema_snapshot_every=2", f"run_dir='{run_dir}'"]), quiet=True)
    return run_dir


def _main(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _dot_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def flip_a_bit(path, member: str = "/data/") -> None:
    """Flip one bit inside the first stored tensor of at least 64 bytes of a torch zip file (not in its metadata)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if member in i.filename and i.file_size >= 64)
    data = bytearray(path.read_bytes())
    local_extra = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + len(info.filename.encode()) + local_extra
    data[start + 5] ^= 0x10
    path.write_bytes(bytes(data))


def _finite(payload) -> bool:
    tensors = [*payload["model"].values(), *(payload["ema"] or {}).values()]
    tensors += [v for s in payload["optimizer"]["state"].values() for v in s.values() if v.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def test_a_diverged_run_writes_no_checkpoint_and_resume_rescues_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _main(capsys, "train", *CLI_SMALL, "--run-dir", run_dir)[0] == 0
    code, err = _main(capsys, "train", "--resume", run_dir, "--steps", "8", "--set", "optimizer.lr=1e30", "-q")
    assert code == 2 and "Traceback" not in err
    assert "holds NaN or inf" in err and "model." in err  # the first tensor that went bad, by name
    assert f"the checkpoint of step 4 in {str(run_dir)!r} is intact" in err
    payload = load_checkpoint(run_dir)
    assert payload["step"] == 4 and _finite(payload)
    code, err = _main(capsys, "train", "--resume", run_dir, "--steps", "8", "--set", "optimizer.lr=1e-3", "-q")
    assert code == 0, err
    payload = load_checkpoint(run_dir)
    assert payload["step"] == 8 and _finite(payload)


def test_non_finite_training_data_is_reported_as_such(tmp_path):
    cfg = load_config(overrides=[*SMALL, f"run_dir='{tmp_path}'", "data.means=[[1e39, 0.0], [0.0, 1.0]]"])
    with pytest.raises(ds.DiffusionSchemesError, match="training data .* NaN or infinite values"):
        train(cfg, quiet=True)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_second_process_on_a_run_directory_is_refused_and_a_killed_ones_lock_is_gone(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from diffusion_schemes_trainer.storage import RunLock
        lock = RunLock({str(run_dir)!r}).acquire()  # held while the object lives
        print("locked", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = load_config(overrides=[*SMALL, f"run_dir='{run_dir}'"])
        with pytest.raises(ds.DiffusionSchemesError, match=rf"in use by process {holder.pid}"):
            train(cfg, quiet=True)
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / LOCK_NAME).exists()  # a killed process leaves its lock file, but the OS released the lock
    (run_dir / ".checkpoint.pt.tmp-999999").write_bytes(b"half a checkpoint")
    train(load_config(overrides=[*SMALL, f"run_dir='{run_dir}'"]), quiet=True)
    assert load_checkpoint(run_dir)["step"] == 4
    assert _dot_files(run_dir) == [LOCK_NAME]  # the owner note released with the lock, the temporary file removed


def test_a_flipped_bit_in_a_checkpoint_is_a_clear_error(small_run, tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes((small_run / "checkpoint.pt").read_bytes())
    flip_a_bit(path)
    with pytest.raises(ds.DiffusionSchemesError, match="does not match its checksum"):
        load_checkpoint(path)


def test_ctrl_c_inside_a_checkpoint_write_exits_130_with_the_written_checkpoint(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    real_save = torch.save
    calls = []

    def save_interrupted_halfway(obj, fh):
        calls.append(obj["step"])
        fh.write(b"PK")  # the start of the file is on disk ...
        os.kill(os.getpid(), signal.SIGINT)  # ... when Ctrl-C arrives
        fh.seek(0)
        real_save(obj, fh)

    monkeypatch.setattr(torch, "save", save_interrupted_halfway)
    code, err = _main(capsys, "train", *CLI_SMALL, "--run-dir", run_dir)
    monkeypatch.undo()
    assert code == 130
    assert calls == [2]  # interrupted during the first checkpoint (step 2), nothing after it ran
    assert f"interrupted at step 2; the checkpoint of step 2 in {str(run_dir)!r} is intact" in err
    assert load_checkpoint(run_dir)["step"] == 2
    assert _dot_files(run_dir) == [LOCK_NAME]


def test_ctrl_c_before_any_checkpoint_says_nothing_was_written(tmp_path):
    def interrupt(step):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="no checkpoint was written"):
        train(load_config(overrides=[*SMALL, "checkpoint_every=10", f"run_dir='{tmp_path}'"]), quiet=True,
              callback=interrupt)


def test_compare_resumes_an_interrupted_comparison(tmp_path, capsys, monkeypatch):
    import diffusion_schemes_trainer.commands.compare as compare_module

    real_train = compare_module.train

    def vp_interrupted(cfg, **kw):
        if cfg.preconditioner.name == "vp":
            kw["callback"] = lambda step: (_ for _ in ()).throw(KeyboardInterrupt) if step == 2 else None
        return real_train(cfg, **kw)

    args = ["compare", "--schemes", "edm,vp", "--evals", "1", *CLI_SMALL, "--run-dir", tmp_path]
    monkeypatch.setattr(compare_module, "train", vp_interrupted)
    code, err = _main(capsys, *args)
    monkeypatch.undo()
    assert code == 130 and "--resume" in err
    edm_metrics = (tmp_path / "edm" / "metrics.json").stat().st_mtime_ns
    assert load_checkpoint(tmp_path / "vp")["step"] == 2
    code, err = _main(capsys, *args)
    assert code == 2 and "--resume" in err
    time.sleep(0.01)
    code, err = _main(capsys, *args, "--resume")
    assert code == 0, err
    assert (tmp_path / "edm" / "metrics.json").stat().st_mtime_ns == edm_metrics  # kept, not retrained
    report = json.loads((tmp_path / "compare.json").read_text())
    assert [r["scheme"] for r in report["schemes"]] == ["edm", "vp"]
    assert load_checkpoint(tmp_path / "vp")["step"] == 4


def test_a_full_disk_while_drawing_leaves_no_empty_picture(tmp_path, monkeypatch):
    figure = pytest.importorskip("matplotlib.figure")
    from diffusion_schemes_trainer import plots

    def full_disk(self, fname, **kwargs):
        (fname if hasattr(fname, "write") else open(fname, "wb")).write(b"\x89PNG")  # a path or an open file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figure.Figure, "savefig", full_disk)
    with pytest.raises(ds.DiffusionSchemesError, match="No space left on device"):
        plots.samples_picture(str(tmp_path / "samples.png"), [("points", torch.randn(50, 2))])
    assert list(tmp_path.iterdir()) == []


def test_a_real_ctrl_c_exits_130_naming_the_checkpoint_on_disk(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "-q", "--run-dir", str(run_dir), "--set", "steps=100000", "--set", "checkpoint_every=5",
            *(a for item in SMALL if not item.startswith(("steps", "checkpoint_every")) for a in ("--set", item))]
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_schemes", *args], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    step = load_checkpoint(run_dir)["step"]
    assert f"the checkpoint of step {step} in {str(run_dir)!r} is intact" in err
    assert _dot_files(run_dir) == [LOCK_NAME]


# ---------------------------------------------------------------- every file the trainer reads is verified
def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock*"))
    return dst


def test_a_damaged_ema_snapshot_is_named_and_nothing_is_ranked(small_run, tmp_path, capsys):
    run_dir = _copy_run(small_run, tmp_path / "run")
    snapshot = run_dir / "ema" / "ema-00000002.pt"
    good = snapshot.read_bytes()
    damages = {
        "a flipped bit": (lambda: flip_a_bit(snapshot), "does not match its checksum"),
        "a truncation": (lambda: snapshot.write_bytes(good[: len(good) // 2]), "is not a readable EMA snapshot"),
        "a foreign file": (lambda: torch.save({"step": 2, "weights": torch.ones(3)}, snapshot),
                           "is not a diffusion-schemes-trainer EMA snapshot"),
    }
    for what, (damage, message) in damages.items():
        snapshot.write_bytes(good)
        damage()
        code, err = _main(capsys, "ema", run_dir, "-q")
        assert code == 2, (what, err)
        assert err.startswith("error: ") and str(snapshot) in err and message in err, (what, err)
        assert not (run_dir / "ema.json").exists(), what
    snapshot.write_bytes(good)
    assert _main(capsys, "ema", run_dir, "-q")[0] == 0
    assert json.loads((run_dir / "ema.json").read_text())["snapshots"] == 2


def test_a_snapshot_holding_nan_is_refused_even_with_a_matching_checksum(small_run, tmp_path, capsys):
    from diffusion_schemes_trainer.storage import checksum

    run_dir = _copy_run(small_run, tmp_path / "run")
    snapshot = run_dir / "ema" / "ema-00000004.pt"
    payload = torch.load(snapshot, weights_only=True)
    name = next(k for k, v in payload["states"][0].items() if v.is_floating_point())
    payload["states"][0][name] = torch.full_like(payload["states"][0][name], float("nan"))
    payload["checksum"] = checksum(payload)  # a file written as it is, not damaged afterwards
    torch.save(payload, snapshot)
    code, err = _main(capsys, "ema", run_dir, "-q")
    assert code == 2 and str(snapshot) in err and "holds NaN or inf" in err and name in err, err
    assert not (run_dir / "ema.json").exists()


def test_a_truncated_or_foreign_checkpoint_is_named(small_run, tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    good = (small_run / "checkpoint.pt").read_bytes()
    path.write_bytes(good[: len(good) - 100])
    code, err = _main(capsys, "sample", path, "-q")
    assert code == 2 and str(path) in err and "is not a readable checkpoint" in err, err
    torch.save({"format": "diffusion-schemes-trainer/1", "step": 1}, path)  # the right format, no checksum
    code, err = _main(capsys, "sample", path, "-q")
    assert code == 2 and str(path) in err and "does not match its checksum" in err, err


def test_a_damaged_digits_classifier_file_is_named(tmp_path):
    pytest.importorskip("sklearn")
    from diffusion_schemes_trainer import Digits
    from diffusion_schemes_trainer.runs import _CACHE, CLASSIFIER_NAME, digits_classifier

    splits = Digits().splits(1797, 300, 0)
    digits_classifier(splits, 0, tmp_path)
    path = tmp_path / CLASSIFIER_NAME
    good = path.read_bytes()
    for damage, message in ((lambda: flip_a_bit(path), "does not match its checksum"),
                            (lambda: path.write_bytes(good[:1000]), "is not a readable digits classifier file")):
        path.write_bytes(good)
        damage()
        _CACHE.clear()  # as in a new process: the classifier comes from the file
        with pytest.raises(ds.DiffusionSchemesError, match=message) as info:
            digits_classifier(splits, 0, tmp_path)
        assert str(path) in str(info.value) and "Delete it" in str(info.value)
    path.write_bytes(good)
    _CACHE.clear()
    assert digits_classifier(splits, 0, tmp_path) is not None


def test_overwrite_removes_everything_the_previous_run_wrote(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _main(capsys, "train", *CLI_SMALL, "--set", "ema_snapshot_every=1", "--run-dir", run_dir)[0] == 0
    assert len(list((run_dir / "ema").glob("ema-*.pt"))) == 4
    torch.save(torch.zeros(2), run_dir / "samples-euler-5.pt")  # what `sample` wrote there
    (run_dir / "notes.txt").write_text("the user's own file")
    code, err = _main(capsys, "train", *CLI_SMALL, "--set", "steps=2", "--ema-profiles", "none", "--run-dir", run_dir)
    assert code == 2 and "--overwrite" in err and "snapshots" in err
    code, err = _main(capsys, "train", *CLI_SMALL, "--set", "steps=2", "--ema-profiles", "none", "--run-dir", run_dir,
                      "--overwrite")
    assert code == 0, err
    assert list((run_dir / "ema").glob("ema-*.pt")) == [] and not (run_dir / "samples-euler-5.pt").exists()
    assert (run_dir / "notes.txt").read_text() == "the user's own file"  # not something a run wrote
    assert load_checkpoint(run_dir)["step"] == 2
    code, err = _main(capsys, "ema", run_dir)
    assert code == 2 and "no post-hoc EMA snapshots" in err


RACER = """
import sys, time
from pathlib import Path
from diffusion_schemes_trainer.errors import TrainerError
from diffusion_schemes_trainer.storage import RunLock
run_dir, go = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
try:
    lock = RunLock(run_dir).acquire()
except TrainerError:
    print("refused", flush=True)
else:
    print("held", flush=True)
    time.sleep(3)
    lock.release()
"""


@pytest.mark.slow
def test_the_lock_cannot_be_held_twice_by_processes_starting_at_once_after_a_dead_holder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from diffusion_schemes_trainer.storage import RunLock
        lock = RunLock({str(run_dir)!r}).acquire()
        print("locked", flush=True)
        import time; time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    assert dead.stdout.readline().strip() == "locked"
    dead.send_signal(signal.SIGKILL)  # no chance to release: its lock file and owner note stay behind
    dead.wait()
    assert (run_dir / LOCK_NAME).exists()
    for trial in range(2):
        go = tmp_path / f"go-{trial}"
        racers = [subprocess.Popen([sys.executable, "-c", RACER, str(run_dir), str(go)], stdout=subprocess.PIPE,
                                   text=True) for _ in range(4)]
        try:
            assert all(r.stdout.readline().strip() == "ready" for r in racers)
            go.write_text("")
            outcomes = sorted(r.stdout.readline().strip() for r in racers)
        finally:
            for r in racers:
                r.wait(timeout=60)
        assert outcomes == ["held", "refused", "refused", "refused"], (trial, outcomes)
    with RunLock(run_dir) as lock:  # and once they are gone, it is free
        assert lock.held


# ---------------------------------------------------------------- types and sizes are what they say
@pytest.mark.parametrize("setting", ["optimizer.lr=true", "sampling_steps=true", "seed=false", "steps=true",
                                     "optimizer.betas=[true, 0.99]", "model.hidden=true"])
def test_a_boolean_is_not_a_number_in_a_config(setting, capsys):
    code, err = _main(capsys, "train", "--set", setting, "--print-config")
    assert code == 2 and "a boolean is not a number" in err and setting.split("=")[0].split(".")[-1] in err, err


def test_a_boolean_in_a_toml_file_is_refused_too(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("[optimizer]\nlr = true\n")
    code, err = _main(capsys, "train", "-c", path, "--print-config")
    assert code == 2 and "lr = True: a boolean is not a number" in err, err
    assert _main(capsys, "train", "--set", "uncertainty=true", "--print-config")[0] == 0  # a real boolean stays one


def test_sizes_that_cannot_fit_are_refused_up_front_naming_the_limit(small_run, tmp_path, capsys):
    cases = [
        (("train", *CLI_SMALL, "--set", "batch_size=100000000000", "--run-dir", tmp_path / "a"),
         "is larger than the training set (data.train_size = 128)"),
        (("train", *CLI_SMALL, "--set", "data.train_size=2000", "--set", "batch_size=3e6", "--run-dir", tmp_path / "b"),
         "batch_size 3000000 is larger than the training set (data.train_size = 2000)"),
        (("train", *CLI_SMALL, "--set", "data.train_size=100000000000", "--run-dir", tmp_path / "c"),
         "the training set (data.train_size = 100000000000) needs about"),
        (("sample", small_run, "--steps", "1000000000000"), "limit of 10000 solver steps"),
        (("sample", small_run, "--num-samples", "100000000000"), "sampling 100000000000 samples needs about"),
        (("train", "--sampling-steps", "1000000000000", "--print-config"), "less than or equal to 10000"),
    ]
    for argv, message in cases:
        code, err = _main(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and message in err, (argv, err)
    assert not (tmp_path / "a" / "checkpoint.pt").exists()


# ---------------------------------------------------------------- checksums over byte views
def test_the_checksum_hashes_each_tensors_bytes_as_stored_in_order():
    """An independent derivation: SHA-256 over the path, dtype, shape and numpy's bytes of each leaf."""
    import hashlib

    from diffusion_schemes_trainer.storage import checksum

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    payload = {"b": {"t": base.T, "s": base[1:, 2:4]}, "a": torch.tensor(3.5, dtype=torch.float64),
               "e": torch.empty(0, 3), "h": torch.ones(5, dtype=torch.bfloat16), "n": 7, "checksum": "ignored"}
    want = hashlib.sha256()
    for where, leaf in (("a", payload["a"]), ("b.s", base[1:, 2:4]), ("b.t", base.T), ("e", payload["e"]),
                        ("h", payload["h"]), ("n", 7)):
        want.update(where.encode() + b"\0")
        if isinstance(leaf, torch.Tensor):
            raw = leaf.view(torch.int16) if leaf.dtype == torch.bfloat16 else leaf  # numpy has no bfloat16
            want.update(f"{leaf.dtype}{tuple(leaf.shape)}".encode() + raw.contiguous().numpy().tobytes())
        else:
            want.update(repr(leaf).encode())
        want.update(b"\0")
    assert checksum(payload) == want.hexdigest()


def test_saving_refuses_the_first_non_finite_tensor_but_not_finite_ones_whose_sum_overflows(tmp_path):
    """The save's quick check must not refuse finite values whose sum overflows, and must name the first bad one."""
    from diffusion_schemes_trainer.storage.verified import load_verified, save_verified

    path = tmp_path / "thing.pt"
    big32 = torch.full((4,), 3e38)  # finite, but its float32 sum is inf
    big16 = torch.full((8,), 6e4, dtype=torch.float16)  # finite, past float16's range once summed
    big64 = torch.full((4,), 1.5e308, dtype=torch.float64)
    fine = {"format": "t/1", "a": big32, "b": big16, "c": big64, "d": 1e308, "i": torch.arange(3),
            "history": {"loss": [float("nan")]}}  # a loss history may hold NaN
    save_verified(path, fine, what="the thing")
    got = load_verified(path, "t/1", {}, what="thing", finite=True)
    assert torch.equal(got["b"], big16) and torch.equal(got["c"], big64)
    cancelling = torch.tensor([float("inf"), float("-inf")])  # its sum is NaN, its elements infinite
    nan16 = torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)
    for payload, first in (({"a": big32, "z": cancelling, "m": {"x": torch.ones(2)}}, "z"),
                           ({"b": {"q": nan16}, "c": big64, "a": torch.ones(3)}, "b.q"),
                           ({"a": torch.ones(2), "b": float("inf")}, "b")):
        with pytest.raises(ds.DiffusionSchemesError, match=f"^{first} holds NaN or inf; the thing .* was not written"):
            save_verified(tmp_path / "bad.pt", {"format": "t/1", **payload}, what="the thing")
        assert not (tmp_path / "bad.pt").exists()


@pytest.mark.parametrize("where", ["small.137", "large", "half.3"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_saving_finds_a_non_finite_value_among_many_small_tensors_or_in_a_large_one(tmp_path, where, bad):
    """The save's check gathers small tensors into chunks of bytes and reads a large one alone: every element counts."""
    from diffusion_schemes_trainer.storage.verified import _FINITE_CHUNK, checksum, load_verified, save_verified

    def payload():
        return {"format": "t/1", "small": {str(i): torch.full((3, 7), float(i)) for i in range(300)},
                "large": torch.linspace(-1, 1, _FINITE_CHUNK // 4 + 5),  # one float32 tensor past a chunk
                "half": {str(i): torch.ones(9, dtype=torch.bfloat16) for i in range(5)}}

    fine = payload()
    save_verified(tmp_path / "fine.pt", fine, what="the thing")
    assert load_verified(tmp_path / "fine.pt", "t/1", {}, what="thing", finite=True)["checksum"] == checksum(fine)
    broken = payload()
    target = broken
    *parents, leaf = where.split(".")
    for key in parents:
        target = target[key]
    target[leaf].view(-1)[-1] = bad  # the last element: the check reads every byte to the end
    with pytest.raises(ds.DiffusionSchemesError, match=f"^{where} holds NaN or inf; the thing .* was not written"):
        save_verified(tmp_path / "bad.pt", broken, what="the thing")
    assert not (tmp_path / "bad.pt").exists()
