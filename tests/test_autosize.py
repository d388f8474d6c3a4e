"""Auto-sizing for a time budget: the rule, the speed probe, and how the command line applies them."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tomllib
import torch

from charrnn import autosize, devices, run
from charrnn.autosize import SMALL_MODEL_UPDATES, choose
from charrnn.config import LIMITS, TrainConfig
from charrnn.data import split
from tests.helpers import CPU, charrnn, make_trainer, tiny_run

MB = 1_000_000
SPEED = 50_000  # chars/s of the reference model: a fast laptop CPU


def test_text_that_outlasts_the_budget_gets_a_small_model_and_long_budgets_on_big_texts_a_bigger_one():
    assert choose(5, SPEED, MB).settings["hidden_size"] == 128  # a quarter of a pass: compute is short
    assert choose(60, SPEED, 100 * MB).settings["hidden_size"] == 128
    assert choose(100, SPEED, MB).settings["hidden_size"] == 256  # five passes: the text is short
    assert choose(3600, SPEED, 20 * MB).settings["hidden_size"] == 384
    # the same long budget on a small corpus: a bigger model would only learn it by heart sooner
    assert choose(3600, SPEED, 100_000).settings["hidden_size"] == 256


def test_a_budget_worth_a_few_passes_is_still_compute_bound():
    # session 8, 100 s on a 2-core CPU with memory reuse: 2x128 d0 beat every 2x256 on the Chinese-like text (~2.0
    # passes of the reference model, 5.6019 against 5.6872 at best) and on tiny shakespeare (~2.8 passes)
    for seconds, speed, chars in ((100, 18_000, 900_000), (100, 28_700, 1_003_855)):
        chosen = choose(seconds, speed, chars).settings
        assert (chosen["hidden_size"], chosen["dropout"], chosen["lr"]) == (128, 0.0, 2e-2)


def test_in_fp32_enough_updates_for_the_middle_model_get_it_without_dropout():
    # session 16, 100 s in fp32 on a faster 2-core CPU: where the 2x256 made ~1,800 steps it beat the 2x128 on tiny
    # shakespeare (1.4540 against 1.4993, means of 3 and 5) and on Python (1.3032 against 1.3372); at 1,148-1,339
    # steps on a slower one it lost (JSON, Python)
    for seconds, speed, chars in ((100, 36_700, 1_003_855), (100, 37_000, 9_000_000)):
        chosen = choose(seconds, speed, chars)
        assert chosen.updates > SMALL_MODEL_UPDATES
        assert (chosen.settings["hidden_size"], chosen.settings["dropout"], chosen.settings["lr"]) == (256, 0.0, 1e-2)
    assert choose(100, 30_000, 9_000_000).settings["hidden_size"] == 128  # ~1,460 updates: still the 2x128
    assert choose(100, 36_700, 1_003_855, adaptive=True).settings["hidden_size"] == 128  # the adaptive head's stays


def test_a_text_that_outlasts_a_long_budget_gets_the_middle_model():
    # ~14,600 updates but a third of a pass: enough updates for the 2x256 to pull ahead, too few for the 2x384
    assert choose(600, SPEED, 100 * MB).settings["hidden_size"] == 256
    assert choose(30, SPEED, 100 * MB).settings["hidden_size"] == 128  # ~730 updates: compute is short
    assert choose(3600, SPEED, MB).settings["hidden_size"] == 256  # many updates, but on a text under 2 MB


def test_the_smaller_model_learns_at_a_higher_rate():
    small, middle, large = (choose(s, SPEED, c).settings for s, c in ((5, MB), (100, MB), (3600, 20 * MB)))
    assert (small["hidden_size"], middle["hidden_size"], large["hidden_size"]) == (128, 256, 384)
    assert small["lr"] > middle["lr"] > large["lr"] == TrainConfig().lr


def test_dropout_grows_with_the_passes_over_the_text():
    passes = [choose(600, SPEED, size) for size in (100 * MB, 10 * MB, MB, 100_000)]
    dropouts = [c.settings["dropout"] for c in passes]
    assert dropouts == sorted(dropouts) and dropouts[0] == 0.0 and dropouts[-1] >= 0.2, dropouts
    assert [c.passes for c in passes] == sorted(c.passes for c in passes)
    # the passes are the reference model's: the 2x128 chosen for 40 s makes ~2.3 over tiny shakespeare's
    # training split, but the budget's compute is worth ~0.9 of the 2x256's, too few to learn the text by heart
    small = choose(40, 23_200, 1_003_855)
    assert small.settings["hidden_size"] == 128 and small.settings["dropout"] == 0.0
    assert small.passes == pytest.approx(40 * 23_200 / 1_003_855)


def test_a_slower_machine_is_a_smaller_budget():
    fast, slow = choose(100, SPEED, MB), choose(100, SPEED / 10, MB)
    assert slow.updates == pytest.approx(fast.updates / 10)
    assert slow.settings["hidden_size"] <= fast.settings["hidden_size"]


@pytest.mark.parametrize("head", ["full", "adaptive"])
def test_validation_costs_a_small_share_of_any_budget(head: str):
    for seconds, chars in ((30, MB), (100, 10 * MB), (600, 10 * MB), (3600, 100 * MB)):
        choice = choose(seconds, SPEED, chars, adaptive=head == "adaptive")
        speed = SPEED * autosize.RELATIVE_SPEED["fp32"][head][choice.settings["hidden_size"]]
        updates = seconds * speed / 2048
        assert updates / choice.settings["eval_every"] == pytest.approx(autosize.EVALUATIONS, rel=0.05)
        scoring = choice.settings["eval_chars"] / (autosize.EVAL_SPEED * speed)  # seconds per evaluation
        assert scoring <= 0.01 * seconds or choice.settings["eval_chars"] == autosize.MIN_EVAL_CHARS


def test_a_small_validation_split_is_scored_more_often_in_the_same_share():
    """Where the split is smaller than one evaluation's share would score, it is scored whole, and as many more
    times as fit in the same share (up to MAX_EVALUATIONS): a small text's best weights fall between five."""
    for seconds, val_chars, more in ((100, 10**6, 1.0), (100, 12_000, None), (600, 10_000, None)):
        plain = choose(seconds, SPEED, 90_000).settings
        choice = choose(seconds, SPEED, 90_000, val_chars=val_chars).settings
        speed = SPEED * autosize.RELATIVE_SPEED["fp32"]["full"][choice["hidden_size"]]
        share = autosize.EVAL_SHARE * seconds * autosize.EVAL_SPEED * speed  # characters an evaluation may score
        want = min(autosize.MAX_EVALUATIONS, autosize.EVALUATIONS * (more or share / val_chars))
        updates = seconds * speed / 2048
        assert updates / choice["eval_every"] == pytest.approx(want, rel=0.05), (seconds, val_chars)
        assert updates / plain["eval_every"] == pytest.approx(autosize.EVALUATIONS, rel=0.05)
        assert want * min(val_chars, choice["eval_chars"]) <= autosize.EVALUATIONS * share * 1.001  # the same share
    assert choose(600, SPEED, 90_000, val_chars=10_000).settings["eval_every"] == choose(
        600, SPEED, 90_000, val_chars=1_000).settings["eval_every"]  # capped


def test_the_line_says_what_was_chosen_and_why():
    line = choose(200, 27_300, 1_003_854, yours={"dropout": 0.25, "lr": 3e-3, "steps": 9000}).describe()
    assert line.startswith("auto-sized for 200s: 2x256, dropout 0.25, lr 0.003, batch 32x64; yours: dropout, lr (")
    assert "27.3k chars/s" in line and "1,003,854 training characters" in line and "--no-auto" in line
    assert choose(200, 27_300, 1_003_854, yours={"steps": 900}).describe().startswith(
        "auto-sized for your 900 steps (~67.5s): 2x128, dropout 0, lr 0.02, batch 32x64 (")


def test_steps_that_end_the_run_first_are_the_budget():
    """--steps with --max-time: the run ends at whichever comes first, so where the steps do, the model is the one
    for the time they take, and validation is paced by them (sized for the clock it would never evaluate)."""
    for seconds, chars in ((600, 10 * MB), (3600, 20 * MB)):
        steps = 1000  # ~60 s of a 2x256 at SPEED
        capped = choose(seconds, SPEED, chars, yours={"steps": steps}).settings
        same = choose(steps * 2048 / SPEED, SPEED, chars).settings
        assert {k: capped[k] for k in autosize.CHOSEN} == {k: same[k] for k in autosize.CHOSEN}
        assert capped["hidden_size"] == 128 and choose(seconds, SPEED, chars).settings["hidden_size"] >= 256
        assert steps / capped["eval_every"] == pytest.approx(autosize.EVALUATIONS, rel=0.05)  # all within the steps
    wide = choose(600, SPEED, 10 * MB, yours={"hidden_size": 1024, "steps": 1000}, speed=SPEED / 10)  # measured
    assert wide.seconds == pytest.approx(1000 * 2048 / (SPEED / 10)) and wide.settings["eval_every"] == 200
    slow = choose(600, SPEED, 10 * MB, yours={"steps": 10**6})  # more steps than the budget makes: the clock ends it
    assert slow.settings == choose(600, SPEED, 10 * MB).settings and slow.steps is None


def test_validation_follows_the_share_at_your_eval_chars():
    """--eval-chars given: as many evaluations as fit in the same share of the budget (fewer where they score more,
    up to MAX_EVALUATIONS where less); 0, the whole split, by the split's size."""
    plain = choose(100, SPEED, 10 * MB, val_chars=10**6).settings
    share = plain["eval_chars"] * autosize.EVALUATIONS  # characters scored by all evaluations together
    speed = SPEED * autosize.RELATIVE_SPEED["fp32"]["full"][plain["hidden_size"]]
    steps = 100 * speed / 2048
    for eval_chars, scored in ((4 * plain["eval_chars"], 4 * plain["eval_chars"]), (0, 10**6),
                               (plain["eval_chars"] // 4, plain["eval_chars"] // 4)):
        yours = choose(100, SPEED, 10 * MB, yours={"eval_chars": eval_chars}, val_chars=10**6).settings
        assert steps / yours["eval_every"] * scored == pytest.approx(share, rel=0.05), eval_chars
    few = choose(100, SPEED, 10 * MB, yours={"eval_chars": 1}, val_chars=10**6).settings
    assert steps / few["eval_every"] == pytest.approx(autosize.MAX_EVALUATIONS, rel=0.05)


def test_what_follows_from_a_setting_of_yours_follows_it():
    rule = choose(60, 20_000, 10 * MB).settings  # ~590 updates on a long text: the rule's 2x128, at 2e-2
    assert rule["hidden_size"] == 128 and rule["lr"] == 2e-2
    wide = choose(60, 20_000, 10 * MB, yours={"hidden_size": 1024}).settings
    assert wide["hidden_size"] == 1024 and wide["lr"] == autosize.LEARNING_RATE[384]  # the nearest tuned width
    assert choose(60, 20_000, 10 * MB, yours={"hidden_size": 192}).settings["lr"] == autosize.LEARNING_RATE[256]
    assert choose(60, 20_000, 10 * MB, yours={"hidden_size": 1024, "lr": 0.5}).settings["lr"] == 0.5
    small_batch = choose(100, SPEED, MB, yours={"batch_size": 8}).settings  # four steps where 32 makes one
    assert small_batch["eval_every"] == pytest.approx(4 * choose(100, SPEED, MB).settings["eval_every"], rel=0.01)
    slow = choose(100, SPEED, MB, yours={"hidden_size": 1024}, speed=SPEED / 20).settings  # a measured speed
    assert slow["eval_every"] == max(10, int(100 * SPEED / 20 / 2048 / autosize.EVALUATIONS))


def test_the_probe_measures_training_speed(corpus: Path, tiny: TrainConfig):
    trainer = make_trainer(corpus, tiny)
    before = trainer.step
    speed = autosize.measure(trainer, seconds=0.05)
    assert 0 < speed < float("inf") and trainer.step >= before + 5  # two untimed steps, at least five timed


def test_a_stall_in_one_step_does_not_make_the_machine_look_slow(corpus: Path, tiny: TrainConfig,
                                                                monkeypatch: pytest.MonkeyPatch):
    trainer = make_trainer(corpus, tiny)
    now, steps, train_step = [0.0], [], trainer.train_step

    def step(batch: object) -> object:  # every step takes 10 ms of a fake clock; the fourth timed one stalls 5 s
        steps.append(batch)
        now[0] += 5.0 if len(steps) == 6 else 0.01
        return train_step(batch)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(autosize, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    speed = autosize.measure(trainer, seconds=0.2)
    assert speed == pytest.approx(steps[-1].x.numel() / 0.01)


@pytest.fixture
def fixed_speed(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The probe reports SPEED without timing anything, and auto's precision is fp32 (the choice is then the same on
    any machine); records the trainers it was given."""
    probed: list[object] = []

    def measure(trainer: object, seconds: float = 0.0) -> float:
        probed.append(trainer)
        return SPEED

    monkeypatch.setattr(autosize, "measure", measure)
    monkeypatch.setattr(devices, "cpu_flags", lambda cpuinfo=None: frozenset())
    return probed


def _settings(run_dir: Path) -> dict:
    return tomllib.loads((run_dir / "config.toml").read_text())


def test_a_timed_run_is_sized_for_its_budget(corpus: Path, tmp_path: Path, fixed_speed: list[object]):
    done = charrnn("train", corpus, "--max-time", "600", "--steps", "2", "--embedding-size", "8", *CPU,
                   "--out", tmp_path / "r", cwd=tmp_path)
    train, val = split(np.zeros(len(corpus.read_text(encoding="utf-8"))), TrainConfig().val_fraction)
    expected = choose(600, SPEED, len(train), yours={"steps": 2}, val_chars=len(val) - 1)  # the steps end it first
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("auto-sized")]
    assert line == expected.describe() and line.startswith("auto-sized for your 2 steps (~")
    settings = _settings(tmp_path / "r")
    for key, value in expected.settings.items():
        assert settings[key] == value, key
    assert settings["embedding_size"] == 8 and len(fixed_speed) == 1
    assert fixed_speed[0].model.config.hidden_size == autosize.REFERENCE["hidden_size"]  # the probe's shape


def test_a_large_vocabulary_is_sized_with_the_adaptive_heads_speeds(tmp_path: Path, fixed_speed: list[object]):
    text = tmp_path / "hanzi.txt"  # 2,500 distinct characters: the adaptive head (ADAPTIVE_VOCAB)
    rng = np.random.default_rng(0)
    text.write_text("".join(chr(0x4E00 + int(i)) for i in rng.zipf(1.3, 300_000) % 2500), encoding="utf-8")
    setup = run.prepare(text, flags={"max_time": 5.0, "device": "cpu", "embedding_size": 8}, out=tmp_path / "r")
    train, val = split(np.zeros(300_000), TrainConfig().val_fraction)
    adaptive, full = (choose(5, SPEED, len(train), adaptive=a, val_chars=len(val) - 1).settings for a in (True, False))
    assert adaptive["hidden_size"] == 128 and adaptive["eval_every"] != full["eval_every"]
    assert setup.cfg.eval_every == adaptive["eval_every"]


def test_in_bf16_a_compute_bound_budget_gets_the_middle_model_without_dropout(tmp_path: Path,
                                                                             fixed_speed: list[object],
                                                                             monkeypatch: pytest.MonkeyPatch):
    # a compute-bound budget: the 2x128, but with a full softmax in bf16 the 2x256 without dropout, which beat it on
    # two corpora at 100 s (bench/RESULTS.md, session 12)
    model = {(bf16, adaptive): (choice["hidden_size"], choice["dropout"])
             for bf16 in (False, True) for adaptive in (False, True)
             for choice in [choose(100, 18_000, 900_000, adaptive, bf16=bf16).settings]}
    assert model == {(False, False): (128, 0.0), (False, True): (128, 0.0), (True, False): (256, 0.0),
                     (True, True): (128, 0.0)}  # compute-bound: no dropout whichever the width
    # tiny shakespeare at 100 s in bf16 (~6.8 passes): dropout, which costs ~40 % of the steps in bf16, only from 8
    # passes on (session 15: d0 1.4283 against d0.1 1.4604); in fp32 from 4
    assert [choose(100, 68_000, 1_003_855, bf16=bf16).settings["dropout"] for bf16 in (True, False)] == [0.0, 0.1]
    assert choose(100, 90_000, 1_003_855, bf16=True).settings["dropout"] == 0.2  # ~9 passes: DROPOUT from there
    assert " in bf16: " in choose(100, 18_000, 900_000, bf16=True).describe()
    assert " in bf16" not in choose(100, 18_000, 900_000).describe()
    text = tmp_path / "text.txt"  # a full softmax
    text.write_text("".join(chr(97 + int(i)) for i in np.random.default_rng(0).zipf(1.3, 300_000) % 26),
                    encoding="utf-8")
    monkeypatch.setattr(devices, "cpu_flags", lambda cpuinfo=None: frozenset({"amx_bf16"}))  # a CPU with bf16
    setup = run.prepare(text, flags={"max_time": 5.0, "device": "cpu", "embedding_size": 8}, out=tmp_path / "r")
    assert fixed_speed[0].autocast_dtype is torch.bfloat16  # the probe ran as the run will
    assert (setup.cfg.hidden_size, setup.cfg.dropout) == (256, 0.0) and " in bf16: " in setup.notes[0]


def test_flags_given_win_over_the_choice(corpus: Path, tmp_path: Path, fixed_speed: list[object]):
    done = charrnn("train", corpus, "--max-time", "600", "--steps", "2", "--hidden-size", "16", "--dropout", "0.05",
                   *CPU, "--out", tmp_path / "r", cwd=tmp_path)
    settings = _settings(tmp_path / "r")
    assert settings["hidden_size"] == 16 and settings["dropout"] == 0.05
    assert settings["batch_size"] == autosize.REFERENCE["batch_size"]  # what was not given is still chosen
    assert "2x16, dropout 0.05, lr " in done.stderr and "yours: dropout, hidden_size (" in done.stderr
    reference, yours = (trainer.model.config.hidden_size for trainer in fixed_speed)
    assert reference == autosize.REFERENCE["hidden_size"]  # the speed the rule reads means one thing
    assert yours == 16  # the speed of the model that trains paces its validation
    train, val = split(np.zeros(len(corpus.read_text(encoding="utf-8"))), TrainConfig().val_fraction)
    expected = choose(600, SPEED, len(train), yours={"hidden_size": 16, "dropout": 0.05, "steps": 2}, speed=SPEED,
                      val_chars=len(val) - 1)
    assert settings["eval_every"] == expected.settings["eval_every"]


def test_a_model_given_whole_still_gets_its_validation_paced(corpus: Path, tmp_path: Path,
                                                           fixed_speed: list[object]):
    # every setting of the model given, and a budget: validation is what is left to size (the defaults, 250,000
    # characters every 250 steps, spent ~20 % of a 100 s run on a 10 MB corpus)
    model = {"hidden_size": 24, "num_layers": 1, "dropout": 0.0, "lr": 0.01, "batch_size": 4, "seq_len": 8}
    setup = run.prepare(corpus, flags={"max_time": 600.0, "device": "cpu", **model}, out=tmp_path / "r")
    assert {k: getattr(setup.cfg, k) for k in model} == model
    assert fixed_speed[-1].model.config.hidden_size == 24  # paced by the speed of the model that trains
    train, val = split(np.zeros(len(corpus.read_text(encoding="utf-8"))), TrainConfig().val_fraction)
    expected = choose(600, SPEED, len(train), yours=model, speed=SPEED, val_chars=len(val) - 1).settings
    assert (setup.cfg.eval_every, setup.cfg.eval_chars) == (expected["eval_every"], expected["eval_chars"])
    assert setup.cfg.eval_every != TrainConfig().eval_every and "yours: batch_size, dropout" in setup.notes[0]


def test_the_probe_takes_a_small_share_of_a_short_budget(corpus: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    given: list[float] = []
    monkeypatch.setattr(autosize, "measure", lambda trainer, seconds: given.append(seconds) or SPEED)
    for budget in (5.0, 600.0):
        run.prepare(corpus, flags={"max_time": budget, "device": "cpu"}, out=tmp_path / f"r{budget}")
    assert given == [pytest.approx(0.1), autosize.PROBE_SECONDS]


def test_a_short_text_is_probed_at_the_batch_shape_given(tmp_path: Path, fixed_speed: list[object]):
    short = tmp_path / "short.txt"
    short.write_text("the river and the stone " * 40, encoding="utf-8")  # 960 characters: too few for 32 x 64
    charrnn("train", short, "--max-time", "600", "--steps", "2", "--batch-size", "2", "--seq-len", "16", *CPU,
            "--out", tmp_path / "r", cwd=tmp_path)
    assert fixed_speed[0].cfg.batch_size == 2 and fixed_speed[0].cfg.seq_len == 16


@pytest.mark.parametrize("how", ["--no-auto", "--config", "no budget", "everything given"])
def test_no_sizing(corpus: Path, tmp_path: Path, fixed_speed: list[object], how: str):
    config = tmp_path / "c.toml"
    config.write_text("hidden_size = 24\n")
    args = {"--no-auto": ["--max-time", "600", "--no-auto"], "--config": ["--max-time", "600", "--config", config],
            "no budget": [],
            "everything given": ["--max-time", "600", "--hidden-size", "24", "--num-layers", "1", "--dropout", "0",
                                 "--lr", "0.01", "--batch-size", "4", "--seq-len", "8", "--eval-every", "5",
                                 "--eval-chars", "100"]}[how]
    done = charrnn("train", corpus, "--steps", "2", *args, *CPU, "--out", tmp_path / "r", cwd=tmp_path)
    assert "auto-sized" not in done.stderr and not fixed_speed
    settings = _settings(tmp_path / "r")
    if how in ("--no-auto", "no budget"):
        assert settings["hidden_size"] == TrainConfig().hidden_size and settings["dropout"] == TrainConfig().dropout


def test_a_budget_without_steps_is_ended_by_the_clock_alone(corpus: Path, tmp_path: Path):
    setup = run.prepare(corpus, flags={"max_time": 5.0, "device": "cpu"}, out=tmp_path / "r", auto=False)
    assert setup.cfg.steps == LIMITS["steps"]
    setup = run.prepare(corpus, flags={"max_time": 5.0, "steps": 7, "device": "cpu"}, out=tmp_path / "r", auto=False)
    assert setup.cfg.steps == 7
    (tmp_path / "old").mkdir()
    trained, _ = tiny_run(tmp_path / "old")  # a warm start too
    setup = run.prepare(corpus, init_from=trained, flags={"max_time": 5.0, "device": "cpu"}, out=tmp_path / "w")
    assert setup.cfg.steps == LIMITS["steps"]


def test_the_probe_does_not_change_what_the_seed_makes(corpus: Path, tmp_path: Path, fixed_speed: list[object]):
    flags = {"max_time": 600.0, "device": "cpu", "embedding_size": 8}
    sized = run.prepare(corpus, flags=flags, out=tmp_path / "a")
    chosen = {k: sized.cfg.to_dict()[k] for k in (*autosize.CHOSEN, *autosize.PACING)}
    plain = run.prepare(corpus, flags={**flags, **chosen}, out=tmp_path / "b")
    assert len(fixed_speed) == 1  # the second run gave every setting auto-sizing sets: no probe
    for a, b in zip(sized.model.state_dict().values(), plain.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
