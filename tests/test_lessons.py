"""Every lesson runs as a user runs it (`python lessons/NN_name.py` from the repo root) and
every expectation it states still holds.

Lessons end in lines `CHECK name = value   expect op expected (± tol)   ok` (lessons/_common.py).
This file re-reads them and re-checks each value itself, and it knows which checks each lesson
must print, so a lesson can't rot silently: not by failing, not by printing a wrong
expectation, not by losing a check. The lessons run in subprocesses, two at a time
(TINYAR_LESSON_JOBS), with the course model in a temporary folder: 06 trains it first thing,
and the others start once it is saved (07, 10 and 12 load it).
"""
import importlib.util
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(p.stem for p in (ROOT / "lessons").glob("[0-9][0-9]_*.py"))
COURSE = "06_masking"                   # trains the course model first thing (then two of its own)
FIRST = (COURSE, "09_training")         # 09 trains its own: start both first

# the checks each lesson prints, in order; a lesson that loses or renames one fails here
EXPECTED = {
    "01_bytes": ["tokens_in_hello", "validation_fraction", "batch_rows_B", "batch_cols_T_plus_1",
                 "rows_are_slices_of_train_text", "unigram_entropy_nats"],
    "02_shift": ["max_abs_targets_minus_inputs_minus_1", "predictions_per_batch", "changed_position",
                 "logit_change_before_it", "logit_change_from_it_on"],
    "03_cross_entropy": ["by_hand_minus_library", "naive_is_nan_at_1000x", "library_relative_error_at_1000x",
                         "pad_is_ignored", "untrained_ce"],
    "04_attention": ["weights_on_future_keys", "max_abs_row_sum_minus_1", "lse_by_hand_vs_library",
                     "output_by_hand_vs_library", "query0_lse_minus_its_score", "lse_last_query"],
    "05_decoder": ["step_by_step_vs_model", "lse_layers_returned", "final_norm_mean", "final_norm_std",
                   "num_params", "embedding_and_head_share", "depth_where_D768_share_drops_under_1%"],
    "06_masking": ["rows_without_exactly_2_masked", "position_0_masked_in_10000_rows",
                   "max_deviation_from_2/7_at_positions_1_to_7", "replace_never_rise_before_first_mask",
                   "replace_trained_rise_before_first_mask", "replace_ce_is_mean_over_all_targets",
                   "fcm_never_rise_before_first_mask", "fcm_trained_rise_before_first_mask",
                   "fcm_ce_is_mean_over_all_targets", "replace_rise_at_masked_never_masked",
                   "replace_rise_at_masked_trained", "fcm_rise_at_masked_never_masked", "fcm_rise_at_masked_trained",
                   "library_refuses_fcm_position_0", "position_0_logits_all_nan"],
    "07_zloss": ["by_hand_vs_library", "untrained_zloss", "untrained_per_layer", "zloss_ratio_with_vs_without",
                 "val_ce_cost", "layer0_lse_times_layer1_lse_with", "per_layer_over_summed_with"],
    "08_next_embed": ["mse_by_hand_vs_library", "l1_by_hand_vs_library", "autoregressive_loss_reports_mse",
                      "mse_gradient_is_2_err_over_N", "l1_gradient_is_sign_err_over_N", "target_only_rows_exist",
                      "gradient_on_target_rows_detached", "gradient_on_target_rows_not_detached"],
    "09_training": ["lr_first_step", "lr_after_warmup", "lr_at_end", "norm_before_clipping", "norm_after_clipping",
                    "first_step_ce", "first_step_zloss", "first_step_total", "final_val_ce"],
    "10_sampling": ["entropy_rises_with_temperature", "entropy_at_temperature_100",
                    "top_k_5_keeps", "top_p_mass_kept", "top_p_mass_without_its_least_likely",
                    "min_p_least_kept_over_best", "greedy_is_argmax", "slide_4_sampler_equals_by_hand",
                    "slide_1_sampler_equals_by_hand", "same_text_with_and_without_cache",
                    "same_seed_same_text", "printable_ascii_fraction"],
    "11_optimizer": ["step_1_by_hand_vs_trainer_in_lr", "first_step_move_in_lr_min", "first_step_move_in_lr_max",
                     "step_2_by_hand_vs_trainer_in_lr", "step_3_by_hand_vs_trainer_in_lr",
                     "step_4_by_hand_vs_trainer_in_lr", "mask_row_shrink_minus_(1-lr*wd)^4",
                     "adam_b1_power_after_4_steps"],
    "12_evaluation": ["val_ce_by_hand_vs_library", "perplexity_is_exp_ce", "bits_per_byte_is_ce_over_ln2",
                      "val_ce_with_mlm_0.25_minus_without", "train_ce_at_end", "val_ce_minus_train_ce_at_end",
                      "val_ce_rise_after_step_100", "best_val_ce_step"],
    "13_initialization": ["std_of_other_matrices", "std_of_residual_writers", "initial_logit_std",
                          "scaled_32_over_2_blocks", "unscaled_32_over_2_blocks"],
    "14_grad_share": ["step1_shares_sum", "step1_gnorm_total_over_grad_norm", "zloss_gradient_share",
                      "abs_cos_ce_zloss", "zloss_with_over_without", "lse_mean_without", "abs_lse_mean_with",
                      "lse_max_with_over_without", "val_ce_cost", "masked_gnorm_total_vs_grad_norm",
                      "masked_zloss_gradient_share", "masked_zloss_over_plain", "masked_val_ce_cost"],
}
CHECK = re.compile(r"^CHECK (\S+) = (\S+)\s+expect (=|≈|<|>) (\S+)(?: ± (\S+))?\s+(ok|MISMATCH)$", re.M)


def holds(value: float, op: str, expected: float, tol: float) -> bool:
    # the printed numbers have 6 significant digits: allow that much rounding on top of tol
    slack = 1e-5 * max(abs(value), abs(expected))
    return {"=": abs(value - expected) <= slack, "≈": abs(value - expected) <= tol + slack,
            "<": value < expected + slack, ">": value > expected - slack}[op]


def load_common(monkeypatch):
    monkeypatch.setenv("TINYAR_KERNEL_CACHE", "0")   # importing it must not touch the user's cache
    spec = importlib.util.spec_from_file_location("lesson_common", ROOT / "lessons" / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    runs = tmp_path_factory.mktemp("lesson-runs")
    env = dict(os.environ, TINYAR_LESSON_RUNS=str(runs),
               PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    run = lambda name: subprocess.run([sys.executable, f"lessons/{name}.py"], cwd=ROOT, env=env,
                                      capture_output=True, text=True, encoding="utf-8", timeout=1500)
    with ThreadPoolExecutor(int(os.environ.get("TINYAR_LESSON_JOBS", "2"))) as pool:
        first = {name: pool.submit(run, name) for name in FIRST}
        while not any(runs.glob("ckpt-*.safetensors")) and not first[COURSE].done():
            time.sleep(1)                            # the course model exists from here on (saved atomically)
        rest = {name: pool.submit(run, name) for name in LESSONS if name not in FIRST}
        return {name: f.result() for name, f in (first | rest).items()}


def test_the_course_is_complete():
    assert LESSONS == sorted(EXPECTED), "add the new lesson's checks to EXPECTED (or remove the old one's)"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lesson_runs_and_its_checks_hold(name, outputs):
    res = outputs[name]
    assert res.returncode == 0, f"{name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert "warning generated" not in res.stdout + res.stderr, "compiler output must go to the lesson's compiler log"
    found = CHECK.findall(res.stdout)
    assert [c[0] for c in found] == EXPECTED[name], res.stdout[-3000:]
    for check, value, op, expected, tol, status in found:
        assert status == "ok", f"{name}: {check} printed {status}"
        assert holds(float(value), op, float(expected), float(tol or 0)), f"{name}: {check} = {value}, expected {op} {expected} ± {tol}"


def test_a_failed_check_stops_the_lesson(monkeypatch, capsys):
    common = load_common(monkeypatch)
    common.check("fine", 5.5512, 5.553, 0.05)
    with pytest.raises(SystemExit, match="lesson check wrong failed"):
        common.check("wrong", 5.0, 5.553, 0.05)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("ok") and lines[1].endswith("MISMATCH")
    assert [c[0] for c in CHECK.findall("\n".join(lines))] == ["fine", "wrong"]


def test_the_course_model_has_the_tests_tiny_shape(monkeypatch):
    """One shape for lessons and tests, so they share generated kernels."""
    cfg = load_common(monkeypatch).CFG
    for field in ("dim", "depth", "heads", "seq_len", "batch_size", "vocab"):
        assert getattr(cfg, field) == getattr(TINY, field), field


def test_lessons_are_short_documented_and_in_the_readme():
    readme = (ROOT / "lessons" / "README.md").read_text()
    for name in LESSONS:
        text = (ROOT / "lessons" / f"{name}.py").read_text()
        assert len(text.splitlines()) <= 80, f"{name} has {len(text.splitlines())} lines; lessons stay under ~80"
        assert text.startswith('"""Lesson ') and "Look at:" in text and f"Run: python lessons/{name}.py" in text
        assert f"`{name}.py`" in readme, f"lessons/README.md has no row for {name}.py"
