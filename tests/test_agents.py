"""RAM agents: gradient isolation, unbiased REINFORCE, determinism, checkpoints, resume,
learning."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
import torch

from hardattn import checkpoint as ckpt
from hardattn.config import TrainConfig
from hardattn.losses import reinforce_loss
from hardattn.networks import gaussian_log_prob


def tiny(tmp_path, **kw) -> TrainConfig:
    """A seconds-long mnist28 run."""
    base = dict(agent="reinforce", env="GlimpseMNIST-v0", device="cpu", batch_size=16,
                total_images=16 * 6, eval_every=3, eval_size=100, test_size=100, eval_batch=100,
                log_every=1, image_every=3, grad_stats_every=0, checkpoint_every=3,
                progress=False, run_dir=str(tmp_path / "run"), core_hidden=64, glimpse_hidden=64,
                what_hidden=32, where_hidden=32)
    base.update(kw)
    return TrainConfig(**base)


def final_weights(run_dir) -> dict:
    state, _ = ckpt.load_latest(run_dir)
    return state["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- gradient isolation


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("agent", ["reinforce", "actor-critic"])
def test_gradient_isolation(data_root, tmp_path, agent, precision):
    from hardattn.agents import actor_critic, reinforce
    from hardattn.agents.ram_common import make_env, make_model, rollout

    cfg = tiny(tmp_path, agent=agent, precision=precision).validate()
    env = make_env(cfg, torch.device("cpu"), 8)
    env.reset(seed=0)
    torch.manual_seed(0)
    model = make_model(cfg, env)
    ro = rollout(model, env, 0.2, torch.Generator().manual_seed(0))
    losses = (reinforce.loss_terms(cfg, ro, {}) if agent == "reinforce"
              else actor_critic.loss_terms(cfg, ro))
    groups = model.head_parameters()
    value_key = "loss_baseline" if agent == "reinforce" else "loss_value"
    expected = {"loss_reinforce": {"location"}, value_key: {"baseline"},
                "loss_classify": {"glimpse_net", "core", "classifier"}}
    for term, reached in expected.items():
        for name, params in groups.items():
            params = [p for p in params if p.requires_grad]
            grads = torch.autograd.grad(losses[term], params, retain_graph=True,
                                        allow_unused=True)
            touched = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
            assert touched == (name in reached), f"{term} -> {name}: {touched}"


@pytest.mark.parametrize("core", ["rnn", "lstm", "gru"])
def test_bf16_rolls_out_in_float32_with_log_probs_of_the_actions_taken(data_root, tmp_path,
                                                                        core):
    from hardattn.agents.ram_common import make_env, make_model, rollout

    cfg = tiny(tmp_path, precision="bf16", core=core).validate()
    env = make_env(cfg, torch.device("cpu"), 8)
    env.reset(seed=0)
    torch.manual_seed(0)
    model = make_model(cfg, env)
    assert model.compute_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    ro = rollout(model, env, 0.2, torch.Generator().manual_seed(0))
    for name in ("logits", "means", "actions", "values", "log_probs"):
        assert getattr(ro, name).dtype == torch.float32, name
    # the log-prob is that of the float32 location sent to the env, before its clamp
    assert torch.equal(ro.log_probs, gaussian_log_prob(ro.actions, ro.means, ro.std))
    # and the matrix multiplies did run in bfloat16: the scores differ from fp32's
    model.compute_dtype = None
    env.reset(seed=0)
    ro32 = rollout(model, env, 0.2, torch.Generator().manual_seed(0))
    assert not torch.equal(ro.logits, ro32.logits)
    assert torch.allclose(ro.logits, ro32.logits, atol=0.1)


def test_an_fp32_model_leaves_the_callers_autocast_alone(data_root, tmp_path):
    from hardattn.agents.ram_common import make_env, make_model

    cfg = tiny(tmp_path).validate()
    env = make_env(cfg, torch.device("cpu"), 4)
    obs, _ = env.reset(seed=0)
    model = make_model(cfg, env)  # precision fp32: no autocast of its own
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the caller's choice stands
        _, h = model.step(obs["glimpse"], obs["loc"], model.initial_state(4, torch.device("cpu")))
    assert h.dtype == torch.bfloat16


@pytest.mark.parametrize("has_bf16, warned", [(False, True), (True, False), (None, False)])
def test_bf16_on_a_cpu_without_bf16_units_warns_naming_the_fix(data_root, tmp_path, capsys,
                                                               monkeypatch, has_bf16, warned):
    from hardattn import benchmarking
    from hardattn.agents.run import Run

    monkeypatch.setattr(benchmarking, "cpu_has_bf16_matmul", lambda: has_bf16)
    with Run(tiny(tmp_path, precision="bf16")):
        pass
    out = capsys.readouterr().out
    assert ("use --precision fp32" in out) == warned


# ---------------------------------------------------------------- unbiased REINFORCE


def test_reinforce_is_unbiased_for_a_categorical_policy_by_enumeration():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.3, -0.2, 0.5, 0.0], requires_grad=True)
    rewards = torch.tensor([1.0, -2.0, 0.5, 3.0])
    exact = torch.autograd.grad((logits.softmax(0) * rewards).sum(), logits)[0]
    n, b = 4000, 0.7  # a constant baseline leaves the estimator unbiased
    a = torch.multinomial(logits.softmax(0).detach(), n, replacement=True, generator=g)
    ests = []
    for i in range(n):
        lp = logits.log_softmax(0)[a[i]].reshape(1, 1)
        ests.append(torch.autograd.grad(-reinforce_loss(lp, (rewards[a[i]] - b).reshape(1, 1)),
                                        logits)[0])
    est = torch.stack(ests)
    z = (est.mean(0) - exact) / (est.std(0) / n**0.5)
    assert z.abs().max() < 4.0, z


def test_reinforce_is_unbiased_for_the_gaussian_location_policy():
    # E[-(a - c)^2] under N(mu, s) is -((mu - c)^2 + s^2): exact gradient -2 (mu - c).
    g = torch.Generator().manual_seed(1)
    mu = torch.tensor([[0.2, -0.4]], requires_grad=True)
    c, s, n = torch.tensor([0.5, 0.1]), torch.tensor([0.3, 0.3]), 20000
    a = (mu.detach() + s * torch.randn(n, 2, generator=g))  # (n, 2)
    reward = -((a - c) ** 2).sum(1)  # (n,)
    lp = gaussian_log_prob(a, mu.expand(n, 2), s)[None]  # (1, n)
    # The estimator averages over the batch: its gradient is the mean of n per-sample ones.
    grad = torch.autograd.grad(-reinforce_loss(lp, reward[None].detach()), mu)[0][0]
    score = (a - mu.detach()) / s**2  # (n, 2) per-sample d log pi / d mu, for the spread
    se = (score * reward[:, None]).std(0) / n**0.5
    exact = -2 * (mu.detach()[0] - c)
    assert ((grad - exact).abs() / se).max() < 4.0


def test_reinforce_loss_refuses_advantages_with_a_gradient():
    x = torch.ones(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="detach"):
        reinforce_loss(torch.zeros(2, 3), x * 2)


# ---------------------------------------------------------------- determinism and resume


@pytest.mark.parametrize("agent, precision", [("reinforce", "fp32"), ("actor-critic", "fp32"),
                                              ("reinforce", "bf16")])
def test_same_seed_same_weights(data_root, tmp_path, agent, precision):
    from hardattn.agents.run import train

    train(tiny(tmp_path / "a", agent=agent, precision=precision))
    train(tiny(tmp_path / "b", agent=agent, precision=precision))
    assert_same_weights(final_weights(tmp_path / "a" / "run"),
                        final_weights(tmp_path / "b" / "run"))
    train(tiny(tmp_path / "c", agent=agent, seed=1))
    a, c = final_weights(tmp_path / "a" / "run"), final_weights(tmp_path / "c" / "run")
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("baseline", ["learned", "ema"])
def test_resume_equals_uninterrupted(data_root, tmp_path, baseline):
    from hardattn.agents.run import train

    full = tiny(tmp_path / "full", baseline=baseline)
    report = train(full)
    run_full = tmp_path / "full" / "run"
    # An interrupted twin: the folder as it was after update 2 (ckpt_00000002, and best.pt
    # if the best validation so far was at or before update 2).
    cut = tmp_path / "cut" / "run"
    shutil.copytree(run_full, cut)
    best_update = ckpt.load_checkpoint(cut / "checkpoints" / "best.pt")["update"]
    for p in (cut / "checkpoints").iterdir():
        if p.name != "ckpt_00000002.pt" and not (p.name == "best.pt" and best_update <= 2):
            p.unlink()
    train(dataclasses.replace(full, resume=str(cut / "checkpoints" / "ckpt_00000002.pt"),
                              run_dir=None))
    assert_same_weights(final_weights(run_full), final_weights(cut))
    resumed = json.loads((cut / "report.json").read_text())
    assert resumed["test_error_pct"] == report["test_error_pct"]


def test_checkpoint_round_trip_and_fallback(tmp_path):
    state = {"model": {"w": torch.arange(4.0)}, "update": 3}
    p1 = ckpt.save_checkpoint(tmp_path / "ckpt_00000001.pt", {**state, "update": 1})
    p3 = ckpt.save_checkpoint(tmp_path / "ckpt_00000003.pt", state)
    assert torch.equal(ckpt.load_checkpoint(p3)["model"]["w"], torch.arange(4.0))
    p3.write_bytes(p3.read_bytes()[:20])  # truncated
    with pytest.raises(ckpt.CheckpointError, match="ckpt_00000003.pt"):
        ckpt.load_checkpoint(p3)
    warnings = []
    loaded, path = ckpt.load_latest(tmp_path, warn=warnings.append)
    assert path == p1 and loaded["update"] == 1 and "ckpt_00000003.pt" in warnings[0]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


# ---------------------------------------------------------------- faults and bad input


@pytest.mark.parametrize("agent", ["reinforce", "soft-glimpse"])
def test_missing_mnist_fails_before_the_run_folder_exists(tmp_path, monkeypatch, agent):
    # Regression: the run folder (config.json, events) was written before the env looked for
    # MNIST, leaving a dead folder behind each failed start.
    from hardattn import data
    from hardattn.agents.run import train

    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "no-mnist-here"))
    monkeypatch.setitem(sys.modules, "torchvision", None)  # no download either
    with pytest.raises(data.MNISTNotFoundError, match="no-mnist-here"):
        train(tiny(tmp_path, agent=agent))
    assert not (tmp_path / "run").exists()


def test_nonfinite_loss_is_not_applied(tmp_path):
    from hardattn.agents.ram_common import safe_step

    model = torch.nn.Linear(2, 1)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss = model(torch.ones(1, 2)).sum()
    losses = {"loss": loss * float("nan"), "loss_classify": loss * float("nan")}
    with pytest.raises(FloatingPointError, match="loss_classify"):
        safe_step(losses, model, opt, tiny(tmp_path))
    applied, _ = safe_step(losses, model, opt, tiny(tmp_path, on_nonfinite="skip"))
    assert not applied and torch.equal(model.weight, before)


@pytest.mark.parametrize("kw, field", [
    (dict(baseline="loo"), "samples-per-image"),
    (dict(batch_size=10, samples_per_image=3), "batch-size"),
    (dict(agent="actor-critic", baseline="ema"), "baseline"),
    (dict(total_images=100, epochs=1.0), "exclusive"),
    (dict(lr=-1.0), "--lr"),
    (dict(env="Nope-v0"), "hardattn/GlimpseMNIST-v0"),
    (dict(eval_size=150), "eval-size"),
    (dict(entropy_coef=0.1), "entropy-coef"),
    (dict(agent="soft-glimpse", precision="bf16"), "--precision=bf16 is for --agent reinforce"),
    (dict(precision="fp16"), "--precision='fp16' is not one of"),
    # Every Literal field is checked, not only those tyro parses: compare --overrides and
    # from_dict (--resume, --from-run) pass strings straight through.
    (dict(baseline="Optimal"), "--baseline='Optimal' is not one of"),
    (dict(std_schedule="cosine"), "--std-schedule='cosine' is not one of"),
    (dict(on_nonfinite="Skip"), "--on-nonfinite='Skip' is not one of"),
    (dict(first_glimpse="centre"), "--first-glimpse='centre' is not one of"),
    (dict(core="transformer"), "--core='transformer' is not one of"),
    # actor-critic's critic is its baseline: "none" was accepted and silently ignored.
    (dict(agent="actor-critic", baseline="none"), "--baseline='none'"),
])
def test_invalid_configs_fail_before_training(tmp_path, kw, field):
    from hardattn.agents.run import registered_ids

    with pytest.raises(ValueError, match=field):
        tiny(tmp_path, **kw).validate(registered_ids())
    assert not (tmp_path / "run").exists()


def test_cli_reports_bad_config_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "hardattn.cli", "train", "--env", "Nope-v0",
                          "--run-dir", str(tmp_path / "r")], capture_output=True, text=True)
    assert out.returncode != 0
    assert "Nope-v0" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- learning and outputs


def test_short_run_learns_mnist28_and_writes_its_outputs(data_root, tmp_path):
    from hardattn.agents.run import train

    cfg = tiny(tmp_path, total_images=64 * 100, batch_size=64, eval_every=50, eval_size=1000,
               test_size=1000, eval_batch=500, core_hidden=256, glimpse_hidden=256,
               what_hidden=128, where_hidden=128, grad_stats_every=50, checkpoint_every=50)
    report = train(cfg)
    assert report["val_error_pct"] < 75.0  # chance is 90% error
    run = tmp_path / "run"
    for name in ("config.json", "meta.json", "report.json", "checkpoints/best.pt"):
        assert (run / name).exists(), name
    assert list(run.glob("events.out.tfevents.*"))
    out = subprocess.run([sys.executable, "-m", "hardattn.cli", "eval", "--checkpoint",
                          str(run), "--split", "test", "--n", "1000", "--device", "cpu"],
                         capture_output=True, text=True, check=True).stdout
    ev = json.loads((run / "eval_test.json").read_text())
    assert abs(ev["error_pct"] - report["test_error_pct"]) < 1e-9, out
    assert (run / "eval_test_glimpses.png").stat().st_size > 1000


def test_bf16_short_run_learns_mnist28(data_root, tmp_path):
    from hardattn.agents.run import train

    cfg = tiny(tmp_path, total_images=64 * 100, batch_size=64, eval_every=50, eval_size=1000,
               test_size=1000, eval_batch=500, core_hidden=256, glimpse_hidden=256,
               what_hidden=128, where_hidden=128, precision="bf16")
    report = train(cfg)
    assert report["val_error_pct"] < 75.0  # chance is 90% error; fp32 gets the same bound
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "bf16"


def test_from_run_reproduces_a_run_from_its_folder(data_root, tmp_path):
    from hardattn.agents.run import train

    first = train(tiny(tmp_path / "a", seed=3))
    again = train(TrainConfig(from_run=str(tmp_path / "a" / "run"),
                              run_dir=str(tmp_path / "b"), progress=False))
    assert again["seed"] == 3 and again["test_error_pct"] == first["test_error_pct"]
    assert_same_weights(final_weights(tmp_path / "a" / "run"), final_weights(tmp_path / "b"))


def test_resume_dispatches_to_the_recorded_agent(data_root, tmp_path):
    from hardattn.agents.run import stored_agent, train

    cfg = tiny(tmp_path, agent="actor-critic")
    train(cfg)
    resume = TrainConfig(resume=str(tmp_path / "run"))  # agent flag left at its default
    assert stored_agent(resume) == "actor-critic"


def test_resume_reports_the_model_best_pt_holds(data_root, tmp_path):
    # A run killed after a later best.pt than its last checkpoint: best.pt comes from the
    # abandoned updates. Where the resumed updates never beat the checkpoint's best (a GPU
    # is not bit-reproducible), that best.pt was tested while the report named the
    # checkpoint's best update and error. The report must describe the model it tests.
    from hardattn.agents.run import train

    full = tiny(tmp_path / "full")
    train(full)
    run = tmp_path / "full" / "run"
    ck = run / "checkpoints"
    state = ckpt.load_checkpoint(ck / "ckpt_00000002.pt")
    state["best"] = {"error": -0.5, "update": 2}  # nothing the resumed updates score beats it
    ckpt.save_checkpoint(ck / "ckpt_00000002.pt", state)
    best = ckpt.load_checkpoint(ck / "best.pt")
    best.update(update=4, val={"error": -1.0})  # found after update 2, then the run died
    ckpt.save_checkpoint(ck / "best.pt", best)
    for p in ck.glob("ckpt_*.pt"):
        if p.name != "ckpt_00000002.pt":
            p.unlink()
    (run / "report.json").unlink()
    report = train(dataclasses.replace(full, resume=str(ck / "ckpt_00000002.pt"), run_dir=None))
    tested = ckpt.load_checkpoint(ck / "best.pt")
    assert (report["best_update"], report["val_error_pct"]) == (4, -1.0)
    assert (tested["update"], tested["val"]["error"]) == (4, -1.0)


def test_resume_takes_the_callers_threads_and_names_a_device_change(data_root, tmp_path):
    # check_run_settings lets threads and device differ on reuse; resume ignored both.
    from hardattn.agents.run import Run, train

    full = tiny(tmp_path, threads=0, total_images=16 * 3)
    train(full)
    (tmp_path / "run" / "report.json").unlink()  # as if killed before its report: resumable
    resume = dataclasses.replace(full, resume=str(tmp_path / "run"), run_dir=None, threads=1)
    threads = torch.get_num_threads()
    try:
        with Run(resume) as run:
            assert run.cfg.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    path = ckpt.periodic_checkpoints(tmp_path / "run" / "checkpoints")[0]  # the newest
    state = ckpt.load_checkpoint(path)
    state["config"]["device"] = "cuda"  # as if trained on a GPU
    ckpt.save_checkpoint(path, state)
    with pytest.raises(ValueError, match=r"--device='cpu'.*trained with --device 'cuda'"):
        Run(dataclasses.replace(resume, resume=str(path)))


def test_a_run_dir_that_holds_a_run_is_refused_without_resume(data_root, tmp_path):
    # Regression: a second run in the same --run-dir kept the first run's higher-numbered
    # checkpoints (pruning deleted the new ones) and mixed both runs' TensorBoard events.
    from hardattn.agents.run import train

    cfg = tiny(tmp_path, total_images=16 * 3)
    train(cfg)
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    with pytest.raises(ValueError, match=r"holds a finished run.*--init-from"):
        train(dataclasses.replace(cfg, seed=1))
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before  # untouched
    (tmp_path / "run" / "report.json").unlink()  # unfinished: resumable
    with pytest.raises(ValueError, match=r"already holds a run.*--resume"):
        train(dataclasses.replace(cfg, seed=1))
    (tmp_path / "empty").mkdir()  # an existing empty folder is fine
    train(dataclasses.replace(cfg, run_dir=str(tmp_path / "empty")))


@pytest.mark.parametrize("case", ["run_dir_is_a_file", "from_run_without_agent",
                                  "from_run_not_a_dict", "checkpoint_without_config",
                                  "checkpoint_outside_a_run"])
def test_cli_reports_bad_paths_and_records_in_one_line(data_root, tmp_path, case):
    args = ["--device", "cpu", "--total-images", "32", "--batch-size", "16"]
    if case == "run_dir_is_a_file":
        (tmp_path / "afile").write_text("x")
        args += ["--run-dir", str(tmp_path / "afile")]
        named = "afile"
    elif case.startswith("from_run"):
        (tmp_path / "old").mkdir()
        record = {"env": "GlimpseMNIST-v0"} if case == "from_run_without_agent" else [1, 2]
        (tmp_path / "old" / "config.json").write_text(json.dumps(record))
        args += ["--from-run", str(tmp_path / "old"), "--run-dir", str(tmp_path / "new")]
        named = "config.json"
    elif case == "checkpoint_outside_a_run":
        # --resume X.pt resumes in X.pt's run folder (../..): here that would be tmp_path's
        # parent, so the run would write its events and checkpoints there.
        cfg = tiny(tmp_path, total_images=16 * 3)
        from hardattn.agents.run import train

        train(cfg)
        loose = tmp_path / "loose.pt"
        shutil.copy(ckpt.periodic_checkpoints(tmp_path / "run" / "checkpoints")[-1], loose)
        args += ["--resume", str(loose)]
        named = "--init-from"
    else:
        (tmp_path / "old" / "checkpoints").mkdir(parents=True)
        ckpt.save_checkpoint(tmp_path / "old" / "checkpoints" / "ckpt_00000001.pt",
                             {"update": 1, "model": {}})
        args += ["--resume", str(tmp_path / "old")]
        named = "ckpt_00000001.pt"
    out = subprocess.run([sys.executable, "-m", "hardattn.cli", "train", *args],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and named in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_resuming_a_finished_run_is_refused(data_root, tmp_path):
    # It re-ran the final test (rewriting report.json with images_per_s 0) and logged the
    # test picture and hparams a second time.
    from hardattn.agents.run import train

    cfg = tiny(tmp_path, total_images=16 * 3)
    train(cfg)
    report = (tmp_path / "run" / "report.json").read_text()
    with pytest.raises(ValueError, match=r"finished.*report.json.*--init-from"):
        train(dataclasses.replace(cfg, resume=str(tmp_path / "run"), run_dir=None))
    assert (tmp_path / "run" / "report.json").read_text() == report


def test_draw_needs_a_grid_of_two_or_more_whichever_flag_sets_it(tmp_path):
    from hardattn.agents.run import registered_ids

    with pytest.raises(ValueError, match=r"--patch=1.*--draw-grid"):
        tiny(tmp_path, agent="draw", patch=1).validate(registered_ids())


def test_cuda_rng_states_restore_on_a_machine_with_fewer_gpus(monkeypatch):
    # A checkpoint from an 8-GPU node resumed with one visible GPU: set_rng_state_all raised
    # IndexError. (Mocked: no GPU is needed to check which states are restored where.)
    state = {**ckpt.rng_state(), "cuda": ["gpu0", "gpu1", "gpu2"]}
    set_calls = []

    def set_all(states):  # as torch's: one state per index, whatever the device count
        if len(states) > 1:
            raise IndexError("list index out of range")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: set_calls.append((s, i)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
    ckpt.set_rng_state(state)
    assert set_calls == [("gpu0", 0)]


def test_resuming_an_older_checkpoint_sets_the_later_ones_aside(data_root, tmp_path):
    # Pruning kept the abandoned later checkpoints (higher numbers) and deleted each new one,
    # so a later --resume RUN went back to the abandoned run.
    from hardattn.agents.run import train

    full = tiny(tmp_path / "full", total_images=16 * 6, checkpoint_every=1, keep_checkpoints=3)
    train(full)
    run = tmp_path / "full" / "run"
    ck = run / "checkpoints"
    reference = final_weights(run)
    old = {p.name: p.read_bytes() for p in ckpt.periodic_checkpoints(ck)}  # 3, 4, 5
    assert sorted(old) == ["ckpt_00000003.pt", "ckpt_00000004.pt", "ckpt_00000005.pt"]
    best_update = ckpt.load_checkpoint(ck / "best.pt")["update"]
    train(dataclasses.replace(full, resume=str(ck / "ckpt_00000003.pt"), run_dir=None))
    aside = next(ck.glob("superseded_*"))
    assert {p.name: p.read_bytes() for p in aside.glob("ckpt_*.pt")} == \
        {k: v for k, v in old.items() if k != "ckpt_00000003.pt"}
    assert (aside / "best.pt").exists() == (best_update > 3)
    newest = ckpt.load_checkpoint(ckpt.periodic_checkpoints(ck)[0])
    assert newest["update"] == 5 and ckpt.periodic_checkpoints(ck)[0].read_bytes() != \
        old["ckpt_00000005.pt"]  # written by the resumed run (same weights, other elapsed_s)
    assert_same_weights(final_weights(run), reference)
