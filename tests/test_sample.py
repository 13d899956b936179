"""Sampling: the KV cache against the model's own forward, the filters on hand-made
distributions, the stop string, a memorised string, and the `sample` command's errors.

One TINY model is trained once for the whole module (on a repeated phrase, so it memorises
it); every test that runs a model shares it and its compiled kernels.
"""
import numpy as np
import pytest
from click.testing import CliRunner
from tinygrad.codegen import to_program_cache

from cli import cli
from conftest import TINY
from tinyar import checkpoint as ckpt
from tinyar.data import Corpus
from tinyar.kvcache import Window
from tinyar.sample import (SampleError, Sampler, TextStream, UnusableWeights, check_settings, load_model,
                           min_p_filter, next_token, softmax, top_k_filter, top_p_filter)
from tinyar.train import Trainer

PHRASE = "hello world\n"  # every pair of neighbouring bytes is unique, so 2+ bytes of context fix the next
CFG = TINY.replace(steps=120)
T = CFG.seq_len


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train on PHRASE repeated; a Sampler made before training samples halfway through (as the
    train command does at each eval) and must follow the weights as they keep training."""
    trainer = Trainer(CFG)
    corpus = Corpus((PHRASE * 40).encode(), CFG.seq_len)
    live = Sampler(trainer.model)
    for step in range(CFG.steps):
        trainer.train_step(*trainer.next_batch(corpus))
        if step == 3:  # the train step is jitted by now; the sampler compiles here
            early = live.generate("hello", 3 * T, temperature=0)
    run_dir = tmp_path_factory.mktemp("run")
    ckpt.save(run_dir, trainer.step, trainer.state_arrays(), trainer.state_meta())
    return dict(model=trainer.model, live=live, early=early, dir=run_dir,
                cached=Sampler(trainer.model), uncached=Sampler(trainer.model, cache=False))


# ---- the cache

@pytest.mark.slow
@pytest.mark.parametrize("slide", [None, 1])  # T/2 (the default), and nanoGPT's window
def test_cached_logits_match_uncached_at_every_position(run, slide):
    """A generation 4x longer than the context, so the window moves many times: the cached
    path (prefill + one-position steps) must give the logits the model's own forward gives."""
    model, rng = run["model"], np.random.default_rng(1)
    cached, uncached = Window(model, slide=slide), Window(model, cache=False, slide=slide)
    prompt = rng.integers(0, 256, size=3)
    a, b = cached.start(prompt), uncached.start(prompt)
    worst = np.abs(a - b).max()
    for _ in range(4 * T):
        token = next_token(a, rng, temperature=1.5)  # varied contexts, same tokens for both
        a, b = cached.append(token), uncached.append(token)
        assert cached.tokens == uncached.tokens
        worst = max(worst, np.abs(a - b).max())
    assert worst < 1e-5, worst


@pytest.mark.slow
def test_long_prompt_keeps_its_last_seq_len_tokens(run):
    prompt = list(range(65, 65 + 3 * T))
    window = run["cached"].window
    logits = window.start(prompt)
    assert window.tokens == prompt[-T:]
    np.testing.assert_allclose(logits, run["uncached"].window.start(prompt[-T:]), atol=1e-5)


@pytest.mark.slow
def test_generation_never_recompiles(run):
    """After one generation has compiled and captured everything, another one (other prompt,
    other positions, window moves) must not generate a single new kernel."""
    sampler = run["cached"]
    sampler.generate("wor", 3 * T, temperature=1.0, seed=3)
    kernels = len(to_program_cache)
    sampler.generate("h", 4 * T, temperature=1.0, seed=4)
    assert len(to_program_cache) == kernels


# ---- what a user sees

@pytest.mark.slow
def test_memorised_phrase_comes_back_greedily(run):
    text = run["cached"].generate("hello", 3 * T, temperature=0)  # the window moves 5 times
    assert text == ((PHRASE * 5)[len("hello"):])[:3 * T]
    assert run["uncached"].generate("hello", 3 * T, temperature=0) == text


@pytest.mark.slow
def test_sampler_made_before_training_follows_the_weights(run):
    """The train command's eval samples: a Sampler compiled mid-training reads the live weights."""
    final = run["live"].generate("hello", 3 * T, temperature=0)
    assert final == run["cached"].generate("hello", 3 * T, temperature=0)
    assert final != run["early"]  # it has learned since, so the text changed


@pytest.mark.slow
def test_greedy_is_deterministic_and_seed_repeats(run):
    s = run["cached"]
    assert s.generate("w", 40, temperature=0, seed=1) == s.generate("w", 40, temperature=0, seed=2)
    hot = dict(temperature=3.0, top_k=50)  # flat enough that different seeds differ
    assert s.generate("w", 40, seed=7, **hot) == s.generate("w", 40, seed=7, **hot)
    assert s.generate("w", 40, seed=7, **hot) != s.generate("w", 40, seed=8, **hot)


@pytest.mark.slow
def test_stop_string_ends_the_text_and_is_not_included(run):
    assert run["cached"].generate("hello", 100, temperature=0, stop="world") == " "
    assert run["cached"].generate("hello", 100, temperature=0, stop="\nhe") == " world"


def test_text_stream_holds_back_partial_stop_and_partial_utf8():
    out = TextStream(b"\n\n")
    pieces = [out.push(b) for b in b"a\nb\n\nc"]
    assert pieces[:3] == [("a", False), ("", False), ("\nb", False)]  # the lone \n waited for "b"
    assert pieces[4] == ("", True)
    out = TextStream()
    assert [out.push(b)[0] for b in "é!".encode()] == ["", "é", "!"]
    out.push(0xC3)
    assert out.flush() == "\ufffd"  # an unfinished character at the end becomes U+FFFD


# ---- the filters, on hand-made distributions (filters see logits; probabilities shown here)

PROBS = np.array([0.1, 0.5, 0.15, 0.25])  # ranked: id 1 (0.5), 3 (0.25), 2 (0.15), 0 (0.1)
LOGITS = np.log(PROBS)


def kept(filtered: np.ndarray) -> set[int]:
    return set(np.flatnonzero(np.isfinite(filtered)).tolist())


def test_top_k_keeps_the_k_largest():
    assert kept(top_k_filter(LOGITS, 1)) == {1}
    assert kept(top_k_filter(LOGITS, 2)) == {1, 3}
    assert kept(top_k_filter(LOGITS, 3)) == {1, 3, 2}
    assert kept(top_k_filter(np.array([3.0, 1.0, 3.0, 3.0]), 2)) == {0, 2}  # ties: lower id first
    np.testing.assert_array_equal(top_k_filter(LOGITS, 2)[[1, 3]], LOGITS[[1, 3]])  # survivors unchanged


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert kept(top_p_filter(LOGITS, 0.3)) == {1}          # 0.5 alone reaches 0.3
    assert kept(top_p_filter(LOGITS, 0.6)) == {1, 3}       # 0.5 < 0.6, 0.5+0.25 >= 0.6
    assert kept(top_p_filter(LOGITS, 0.8)) == {1, 3, 2}    # 0.75 < 0.8, 0.9 >= 0.8
    assert kept(top_p_filter(LOGITS, 1.0)) == {0, 1, 2, 3}


def test_min_p_keeps_tokens_within_a_fraction_of_the_best():
    assert kept(min_p_filter(LOGITS, 0.6)) == {1}          # needs p >= 0.3
    assert kept(min_p_filter(LOGITS, 0.4)) == {1, 3}       # needs p >= 0.2
    assert kept(min_p_filter(LOGITS, 0.25)) == {1, 3, 2}   # needs p >= 0.125
    assert kept(min_p_filter(LOGITS, 0.0)) == {0, 1, 2, 3}


def test_filters_come_before_the_temperature():
    """At temperature 5 the distribution is nearly flat; if it were divided first, top-p 0.6
    would keep three tokens. Filtering the raw logits keeps {1, 3} at any temperature."""
    rng, logits = np.random.default_rng(0), np.full(258, -np.inf)
    logits[:4] = LOGITS
    draws = {next_token(logits, rng, temperature=5.0, top_p=0.6) for _ in range(500)}
    assert draws == {1, 3}
    assert kept(top_p_filter(LOGITS / 5.0, 0.6)) == {1, 3, 2}  # the other order, for contrast


def test_filters_chain_and_greedy_never_emits_mask_or_pad():
    rng, logits = np.random.default_rng(0), np.zeros(258)
    logits[[10, 11, 12]] = [3.0, 2.9, 1.0]
    logits[[256, 257]] = 9.0  # MASK and PAD the most likely: still never chosen
    assert next_token(logits, rng, temperature=0) == 10
    draws = {next_token(logits, rng, temperature=1.0, top_k=3, min_p=0.5) for _ in range(300)}
    assert draws == {10, 11}  # top-k keeps 10, 11, 12; min-p then drops 12 (e^-2 < 0.5 of the best)


@pytest.mark.slow
def test_filters_agree_with_x_transformers():
    """x-transformers' own top_k / top_p / min_p (torch) as an independent oracle, on random logits."""
    torch = pytest.importorskip("torch")
    xt = pytest.importorskip("x_transformers.autoregressive_wrapper")
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(size=256) * 3
        t = torch.tensor(logits)[None]
        k, p, m = int(rng.integers(1, 60)), float(rng.uniform(0.05, 0.99)), float(rng.uniform(0.01, 0.9))
        assert kept(top_k_filter(logits, k)) == kept(xt.top_k(t, k=k)[0].numpy())
        assert kept(top_p_filter(logits, p)) == kept(xt.top_p(t, thres=p)[0].numpy())
        assert kept(min_p_filter(logits, m)) == kept(xt.min_p(t, min_p=m)[0].numpy())
    assert np.allclose(softmax(np.log(PROBS)), PROBS)


def test_nan_or_inf_logits_are_unusable_weights_not_a_numpy_error():
    # weights that are finite but huge (a damaged or edited file) overflow to NaN/inf logits;
    # numpy's "Probabilities contain NaN" traceback becomes one line naming the checkpoint (cli.py)
    rng = np.random.default_rng(0)
    for bad in (np.nan, np.inf):
        logits = np.zeros(258)
        logits[7] = bad
        for temperature in (0.0, 1.0):
            with pytest.raises(UnusableWeights, match="the model's output is NaN or inf"):
                next_token(logits, rng, temperature=temperature)
    with pytest.raises(UnusableWeights):
        next_token(np.full(258, -np.inf), rng)


def test_slide_zero_is_refused_not_read_as_the_default():
    from tinyar.model import Decoder
    model = Decoder(TINY)   # numpy weights only: the check comes before any buffer is made
    for slide in (0, -1, T):
        with pytest.raises(ValueError, match=f"--slide must be between 1 and seq_len-1 = {T - 1} \\(got {slide}\\)"):
            Window(model, slide=slide)


def tiny_run(folder, **config):
    """A run folder holding an untrained TINY model's checkpoint (no step runs, nothing compiles)."""
    t = Trainer(TINY)
    meta = t.state_meta()
    meta["config"] |= config
    return ckpt.save(folder, 0, t.state_arrays(), meta)


def test_an_absurd_seq_len_in_the_checkpoint_is_refused_before_the_model_is_built(tmp_path):
    # seq_len 10**12 used to make numpy try to allocate 58 TiB for the position embeddings
    path = tiny_run(tmp_path, seq_len=10**12)
    r = sample_cmd(tmp_path)
    assert_one_line_error(r, f"{path} does not fit its own config: 14,768 weights, the model of its config has "
                             f"16,000,000,014,640", "no earlier checkpoint")


def test_ctrl_c_during_sample_exits_130_like_train(tmp_path, monkeypatch):
    import tinyar.sample
    tiny_run(tmp_path)

    def interrupted(self, *args, **kwargs):
        self.tokens = [104, 105]
        yield "hi"
        raise KeyboardInterrupt
    monkeypatch.setattr(tinyar.sample.Sampler, "stream", interrupted)
    r = sample_cmd(tmp_path, "--seed", 3)
    assert r.exit_code == 130 and "Aborted" not in r.output and "Traceback" not in r.output, r.output
    assert r.stdout == "\nhi\n"
    assert r.stderr.strip() == "error: interrupted (Ctrl-C) after 2 new tokens; --seed 3 repeats this text"


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(temperature=float("nan")), dict(top_k=0),
                                 dict(top_p=0.0), dict(top_p=1.5), dict(min_p=-0.1), dict(min_p=2), dict(stop="")])
def test_invalid_settings_raise(bad):
    with pytest.raises(SampleError):
        check_settings(**bad)


# ---- loading a run and the `sample` command

def sample_cmd(*args):
    # TINYAR_KERNEL_CACHE=0: tests leave no kernel file in the user's cache folder
    return CliRunner().invoke(cli, ["sample", *map(str, args)], env={"TINYAR_KERNEL_CACHE": "0"})


@pytest.mark.slow
def test_load_model_gives_the_trained_model(run):
    model, path = load_model(run["dir"])
    assert path == ckpt.latest(run["dir"])
    assert Sampler(model).generate("hello", 20, temperature=0) == run["cached"].generate("hello", 20, temperature=0)


@pytest.mark.slow
def test_sample_command_streams_the_memorised_phrase(run):
    r = sample_cmd(run["dir"], "--prompt", "hello", "--greedy", "--max-new-tokens", 19, "--top-p", 0.9)
    assert r.exit_code == 0, r.output
    assert r.stdout == "hello world\nhello world\n\n"  # prompt + 19 bytes + final newline
    assert "19 tokens" in r.stderr and "KV cache" in r.stderr
    args = (run["dir"], "--prompt", "w", "--temperature", 3, "--seed", 5, "--max-new-tokens", 30, "--no-cache")
    assert sample_cmd(*args).stdout == sample_cmd(*args).stdout


@pytest.mark.slow
def test_compare_cache_prints_both_speeds_and_same_text(run):
    r = sample_cmd(run["dir"], "--prompt", "hello", "--compare-cache", "--max-new-tokens", 3 * T, "--seed", 2)
    assert r.exit_code == 0, r.output
    assert "tok/s with the KV cache" in r.stdout and "same text: True" in r.stdout


@pytest.mark.slow
def test_prompt_file_takes_raw_bytes(run, tmp_path):
    f = tmp_path / "p.bin"
    f.write_bytes(b"\xff\xfehello")  # not UTF-8, but a byte model reads any bytes
    r = sample_cmd(run["dir"], "--prompt-file", f, "--greedy", "--max-new-tokens", 6)
    assert r.exit_code == 0, r.output
    assert r.stdout == "\ufffd\ufffdhello world\n"


def bad_runs(run, tmp_path) -> dict:
    """Run folders that can't be sampled, keyed by words their error must contain."""
    arrays, meta = ckpt.read_safetensors(ckpt.latest(run["dir"]))
    folders = {name: tmp_path / name for name in ("empty", "newer", "wider", "broken", "nan", "int", "str", "huge")}
    for folder in folders.values():
        folder.mkdir()
    ckpt.save(folders["newer"], 1, arrays, meta | {"config": meta["config"] | {"rope": True}})
    ckpt.save(folders["wider"], 1, arrays, meta | {"config": meta["config"] | {"dim": 32}})
    (folders["broken"] / "ckpt-00000001.safetensors").write_bytes(b"{}")
    ckpt.save(folders["nan"], 1, arrays | {"model.head.weight": arrays["model.head.weight"] * np.nan}, meta)
    ckpt.save(folders["int"], 1, arrays | {"model.tok_emb": arrays["model.tok_emb"].view(np.int32)}, meta)
    ckpt.save(folders["str"], 1, arrays, meta | {"config": meta["config"] | {"dim": "16"}})
    ckpt.save(folders["huge"], 1, arrays | {"model.head.weight": np.full_like(arrays["model.head.weight"], 3e38)},
              meta)   # finite, checksummed, and the logits overflow
    return {"does not exist": tmp_path / "nowhere", "no checkpoint": folders["empty"],
            "unusable config (unknown config fields ['rope']": folders["newer"],
            "does not fit its own config": folders["wider"], "config field dim is '16' (str)": folders["str"],
            "the model's output is NaN or inf": folders["huge"],
            "truncated or corrupted": folders["broken"], "model.head.weight holds NaN": folders["nan"],
            "weight tok_emb is int32": folders["int"]}


def assert_one_line_error(r, *words, shown=""):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.stdout == shown
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.slow
def test_bad_run_folders_give_one_line_errors(run, tmp_path):
    for words, folder in bad_runs(run, tmp_path).items():
        shown = "hi\n" if "output is NaN" in words else ""   # found at the first token, after the prompt
        assert_one_line_error(sample_cmd(folder, "--prompt", "hi"), words, str(folder), shown=shown)


@pytest.mark.parametrize("args,words", [
    (["--prompt", ""], ["prompt", "empty"]),
    (["--prompt", "caf\udce9"], ["not valid UTF-8", "--prompt-file"]),  # how Python passes raw argv bytes
    (["--prompt-file", "/nonexistent/p.txt"], ["cannot read --prompt-file"]),
    (["--top-p", "1.5"], ["--top-p"]),
    (["--top-k", "0"], ["--top-k"]),
    (["--min-p", "2"], ["--min-p"]),
    (["--temperature", "-1"], ["--temperature"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens"]),
    (["--stop", ""], ["--stop"]),
    (["--slide", str(T)], ["--slide"]),
    (["--slide", "0"], ["--slide must be between 1 and seq_len-1", "(got 0)"]),
])
@pytest.mark.slow
def test_bad_settings_give_one_line_errors(run, args, words):
    assert_one_line_error(sample_cmd(run["dir"], *args), *words)


@pytest.mark.slow
def test_empty_prompt_file(run, tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert_one_line_error(sample_cmd(run["dir"], "--prompt-file", tmp_path / "empty.txt"), "empty")
