"""The trainer's class-conditional runs: --class-conditional, guided `sample`, a guidance sweep in `compare`."""

from __future__ import annotations

import json

import pytest
import torch

from diffusion_schemes.cli import commands as cli
from test_trainer import _registry, run  # noqa: F401 - the autouse fixture applies here too

# The 8-blob mixture (its component is the class) with a small MLP: a few seconds.
SMALL = ["--class-conditional", "--steps", "300", "--batch-size", "128", "--sampling-steps", "12", "-q",
         "--set", "data.train_size=4096", "--set", "data.eval_size=256", "--set", "model.hidden=64",
         "--set", "model.depth=2", "--set", "projections=64", "--set", "optimizer.warmup=20"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One class-conditional run and one shorter (weaker) run of the same data, for autoguidance."""
    root = tmp_path_factory.mktemp("cc")
    assert cli.main([str(a) for a in ["train", *SMALL, "--run-dir", root / "run"]]) == 0
    weak = [a if a != "300" else "60" for a in SMALL]
    assert cli.main([str(a) for a in ["train", *weak, "--run-dir", root / "weak"]]) == 0
    return root


def accuracy(out):
    line = next(l for l in out.splitlines() if l.startswith("class accuracy"))
    return float(line.rsplit(" ", 1)[1])


def test_class_conditional_training_records_class_accuracy(trained):
    metrics = json.loads((trained / "run" / "metrics.json").read_text())
    assert metrics["config"]["class_conditional"] is True
    assert metrics["final"]["class_accuracy"] >= 0.9  # conditional samples land in the class asked for (chance: 1/8)


def test_guidance_scales_change_class_accuracy(capsys, trained):
    code, out_w0, err = run(capsys, "sample", trained / "run", "--guidance", "0", "--out", trained / "s")
    assert code == 0, err
    code, out_w1, err = run(capsys, "sample", trained / "run", "--guidance", "1", "--out", trained / "s")
    assert code == 0, err
    assert accuracy(out_w0) < 0.35 < 0.9 <= accuracy(out_w1)  # w = 0 ignores the class: about 1/8 right
    assert "256 samples, 23 model evaluations" in out_w1  # w = 1: one evaluation per Heun call
    code, out, err = run(capsys, "sample", trained / "run", "--guidance", "3", "--guidance-interval", "0.2,2",
                         "--guidance-rescale", "0.5", "--out", trained / "s")
    assert code == 0, err
    assert accuracy(out) >= 0.9
    evaluations = int(out.split(" model evaluations")[0].rsplit(" ", 1)[1])
    assert 23 < evaluations < 46  # guided only inside the interval


def test_sample_sweeps_guidance_scales_from_the_same_seeds(capsys, trained):
    code, out, err = run(capsys, "sample", trained / "run", "--guidance-scales", "0,1,3", "--out", trained / "sweep")
    assert code == 0, err
    rows = json.loads((trained / "sweep" / "guidance.json").read_text())
    assert [r["nfe"] for r in rows] == [23, 23, 46]
    assert rows[0]["class_accuracy"] < 0.35 < 0.9 <= rows[1]["class_accuracy"] <= rows[2]["class_accuracy"] + 0.02
    assert "| w = 0 | w = 1 | w = 3 |" in out
    code, _, err = run(capsys, "sample", trained / "run", "--guidance-scales", "1", "--guidance", "2")
    assert code == 2 and "drop the other sampling flags" in err


def test_a_guidance_weight_that_blows_up_the_samples_is_a_clear_error(capsys, trained):
    code, out, err = run(capsys, "sample", trained / "run", "--guidance", "1e20", "--out", trained / "blown")
    assert code == 2 and "\nerror: " in err, err
    assert "NaN or inf" in err and "guidance" in err and "Traceback" not in err, err
    assert not list((trained / "blown").glob("samples-*"))  # no NaN samples file, no picture


def test_the_guidance_sweep_runs_on_the_runs_threads_from_its_first_sample(capsys, trained, monkeypatch):
    """``threads`` (1 here) is set before any work: the sweep was 7.7x slower when it ran on torch's default."""
    import diffusion_schemes_trainer.runs as runs

    seen = []
    real = runs.evaluate

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(runs, "evaluate", spy)
    try:
        code, _, err = run(capsys, "sample", trained / "run", "--guidance-scales", "0,1", "--out", trained / "threads")
    finally:
        torch.set_num_threads(before)
    assert code == 0, err
    assert seen == [1, 1]


def test_one_class_and_autoguidance(capsys, trained):
    code, out, err = run(capsys, "sample", trained / "run", "--class", "3", "--guidance", "2", "--num-samples", "64",
                         "--out", trained / "s")
    assert code == 0, err
    samples = torch.load(trained / "s" / "samples-heun-12-w2-class3.pt")
    assert samples.shape == (64, 2) and accuracy(out) >= 0.9
    code, out, err = run(capsys, "sample", trained / "run", "--guide", trained / "weak", "--guidance", "1.5",
                         "--out", trained / "s")
    assert code == 0, err
    assert "46 model evaluations" in out and accuracy(out) >= 0.9


def test_bad_class_and_guidance_flags(capsys, trained, tmp_path):
    code, _, err = run(capsys, "train", "--data", "two_moons", "--class-conditional", "--steps", "2", "-q",
                       "--run-dir", tmp_path / "m")
    assert code == 2 and "needs a data set with classes" in err
    code, _, err = run(capsys, "sample", trained / "run", "--class", "8")
    assert code == 2 and "classes are 0..7" in err
    code, _, err = run(capsys, "sample", trained / "run", "--guidance-interval", "5,0.2")
    assert code == 2 and "sigma_lo <= sigma_hi" in err
    code, _, err = run(capsys, "sample", trained / "run", "--guidance-interval", "x")
    assert code == 2 and "two noise levels" in err
    code, _, err = run(capsys, "sample", trained / "run", "--guidance", "inf")
    assert code == 2 and "must be finite" in err
    unconditional = [a for a in SMALL if a != "--class-conditional"]
    assert run(capsys, "train", *unconditional, "--steps", "2", "--run-dir", tmp_path / "u")[0] == 0
    code, _, err = run(capsys, "sample", tmp_path / "u", "--guidance", "2")
    assert code == 2 and "needs a class-conditional run" in err
    code, _, err = run(capsys, "sample", trained / "run", "--guide", tmp_path / "u")
    assert code == 2 and "same data and conditioning" in err


def test_compare_sweeps_guidance_scales(capsys, tmp_path):
    tiny = [a if a != "300" else "40" for a in SMALL]
    code, out, err = run(capsys, "compare", "--schemes", "edm", "--evals", "1", *tiny, "--guidance-scales", "0,1,2",
                         "--run-dir", tmp_path)
    assert code == 0, err
    assert "| scheme | w = 0 | w = 1 | w = 2 |" in out
    report = json.loads((tmp_path / "compare.json").read_text())
    sweep = report["schemes"][0]["guidance"]
    assert [r["scale"] for r in sweep] == [0.0, 1.0, 2.0] and [r["nfe"] for r in sweep] == [23, 23, 46]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "guidance-edm.png").is_file()
    code, _, err = run(capsys, "compare", "--schemes", "edm", "--steps", "2", "-q", "--guidance-scales", "1",
                       "--run-dir", tmp_path / "x")
    assert code == 2 and "needs class-conditional runs" in err


def test_the_digits_judge_is_accurate_on_held_out_images():
    pytest.importorskip("sklearn")
    from diffusion_schemes_trainer import Digits
    from diffusion_schemes_trainer.metrics import class_accuracy
    from diffusion_schemes_trainer.runs import classifier_for

    splits = Digits().splits(train_size=1797, eval_size=300, seed=0)
    judge = classifier_for(Digits(), splits, seed=0)
    assert class_accuracy(judge, splits.eval_a, splits.eval_a_labels) >= 0.95
    assert class_accuracy(judge, splits.eval_b, splits.eval_b_labels) >= 0.95


def test_digits_classes_are_judged_by_the_fd_digits_classifier():
    pytest.importorskip("sklearn")
    from diffusion_schemes_trainer import Digits, TwoMoons
    from diffusion_schemes_trainer.metrics import DigitsJudge, train_classifier
    from diffusion_schemes_trainer.runs import classifier_for

    splits = Digits().splits(train_size=1797, eval_size=300, seed=0)
    judge = classifier_for(Digits(), splits, seed=0)
    # One classifier: the judge's labels are the argmax of a classifier trained afresh the way fd_digits trains its own.
    fresh = train_classifier(splits.train, splits.train_labels, seed=0)
    images = torch.cat([splits.eval_a, torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))])
    assert torch.equal(judge(images), fresh(images).argmax(1))
    measured = DigitsJudge(fresh, splits.eval_a, splits.eval_b).measure(splits.eval_b, splits.eval_b_labels)
    assert measured["class_accuracy"] == float((fresh(splits.eval_b).argmax(1) == splits.eval_b_labels).double().mean())
    moons = TwoMoons()
    assert classifier_for(moons, moons.splits(100, 10, 0)) is None  # no classes, no judge


def test_digits_guidance_sweep_reports_fd_digits_with_the_runs_classifier(capsys, tmp_path):
    pytest.importorskip("sklearn")
    code, _, err = run(capsys, "train", "--data", "digits", "--class-conditional", "--steps", "4", "--batch-size", "8",
                       "--sampling-steps", "2", "--set", "data.eval_size=20", "--set", "model.channels=8",
                       "--set", "model.blocks=1", "--set", "projections=8", "-q", "--run-dir", tmp_path / "d")
    assert code == 0, err
    final = json.loads((tmp_path / "d" / "metrics.json").read_text())["final"]
    code, out, err = run(capsys, "sample", tmp_path / "d", "--guidance-scales", "0,1,2", "--out", tmp_path / "sweep")
    assert code == 0, err
    rows = json.loads((tmp_path / "sweep" / "guidance.json").read_text())
    assert [r["nfe"] for r in rows] == [3, 3, 6]
    # w = 1 is the conditional sampling that training measured, from the same latents and weights.
    assert rows[1]["fd_digits"] == pytest.approx(final["fd_digits"], rel=1e-6)
    assert rows[1]["class_accuracy"] == pytest.approx(final["class_accuracy"])
    assert all(r["fd_digits_floor"] == pytest.approx(final["fd_digits_floor"], rel=1e-9) for r in rows)
    assert len({round(r["fd_digits"], 6) for r in rows}) == 3  # each weight's samples measured on their own
    assert f"fd_digits (floor {final['fd_digits_floor']:.2f})" in out
    assert f"{rows[2]['class_accuracy']:.3f} / {rows[2]['sw']:.4f} / {rows[2]['fd_digits']:.2f} |" in out
