#!/usr/bin/env bash
# Mutation testing of the core: does the suite FAIL when the code is wrong? mutmut 3 plants small
# bugs (a changed constant or operator, a dropped argument) one at a time and runs the tests that
# reach the mutated function; a mutant no test fails on "survived". Not part of CI: a cold run of
# every module takes hours on 2 cores (results/mutation.md gives each module's time), KEEP=1 after a
# change minutes. See docs/testing.md for how to read the result.
#   pip install -r requirements-mutation.txt
#   bash tools/mutation.sh                           # every module below, then results/mutation.md
#   bash tools/mutation.sh checkpoint.py model.py    # only these
#   MUTANTS='train.x_lr_at*' bash tools/mutation.sh train.py     # only the mutants of some functions
#   RUN_TAG=again MUTANTS='train.x_fit_vocabulary*' bash tools/mutation.sh train.py     # a rerun of some
#                                                    # mutants beside the last run; the report merges them
#   KEEP=1 bash tools/mutation.sh model.py           # continue the last run of a module after a change: mutmut
#                                                    # keeps the verdicts of functions whose code did not change
#                                                    # and tests the rest (changed, new, or not reached before),
#                                                    # then tries the survivors again against today's tests
#   bash tools/mutation.sh --changed [BASE]          # only the mutants of the functions changed since BASE (default:
#                                                    # the merge-base with main; on main, the last commit), before a commit
#   bash tools/mutation.sh --report                  # rebuild results/mutation.md (and results/mutation_excluded.md)
#                                                    # from results/mutation_verdicts.txt
# Each module runs in its own scratch copy of the repo ($MUTATION_DIR, default /tmp/lssa-mutation)
# with the test files chosen for it below: the ones that exercise it, and fast. Each run's verdicts go
# to results/mutation_verdicts.txt (with a hash of each tested function's code), which the report reads:
# commit it with the code and tests it judges.
# The Triton kernels are mutated separately (Triton parses their source): tools/mutate_kernels.py.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${MUTATION_DIR:-/tmp/lssa-mutation}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=offline HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
source scripts/env.sh
python -c "import mutmut" 2>/dev/null || { echo "mutmut is not installed: pip install -r requirements-mutation.txt" >&2; exit 1; }

declare -A TESTS=(
  [attention.py]="tests/test_attention.py tests/test_attention_api.py tests/test_kernel_dispatch.py tests/test_kernels.py --deselect tests/test_kernels.py::test_interpreter_under_torch_compile --deselect tests/test_kernel_dispatch.py::test_the_head_dim_warning_names_the_model_that_asked --deselect tests/test_kernel_dispatch.py::test_the_fallback_warning_names_the_code_that_asked"
  # torch.compile cannot trace through mutmut's trampolines (a ContextVar): the compile tests are left out;
  # a warning's stacklevel counts stack frames and each trampoline adds one, so the tests of the file a
  # warning names (the head-dim and the fallback warnings) fail on the unmutated code there: left out too
  [model.py]="tests/test_model_maths.py tests/test_attention_stats.py::test_attention_maps_of_a_model_with_and_without_a_per_head_scale tests/test_model.py tests/test_generate.py --deselect tests/test_model.py::test_compiled_model_does_not_recompile --deselect tests/test_model.py::test_trained_at_32_runs_at_512"
  [checkpoint.py]="tests/test_checkpoint.py"
  [eval_length.py]="tests/test_eval_sweep.py tests/test_eval.py::test_too_small_a_token_budget_says_what_was_asked_and_what_the_split_holds"
  [eval_passkey.py]="tests/test_passkey.py tests/test_passkey_gaps.py"
  [data/shards.py]="tests/test_data.py tests/test_data_gaps.py"
  [data/prepare.py]="tests/test_data.py tests/test_data_gaps.py tests/test_prepare_resume.py tests/test_prepare_gaps.py"
  [data/catalog.py]="tests/test_catalog.py tests/test_data.py tests/test_prepare_gaps.py tests/test_bytes.py --deselect tests/test_bytes.py::test_what_does_not_fit_the_shards_is_a_clear_error --deselect tests/test_bytes.py::test_train_sweep_sample_on_bytes"
  # the two test_bytes.py tests left out train models (30 s for each mutant they reach); tests/test_catalog.py
  # checks the same functions directly
  [hf_lssa.py]="tests/test_hf.py --deselect tests/test_hf.py::test_fresh_process_logits_equal_ours_at_1x_and_16x --deselect tests/test_hf.py::test_lm_eval_hf_model_scores_like_ours --deselect tests/test_hf.py::test_lm_eval_hf_model_generates_like_ours"
  # left out for their cost (20, 14 and 8 s for each mutant they reach): the exported folder loaded in a
  # child process, and through lm-eval's hf model; the in-process tests load the same exported folders
  [configurator.py]="tests/test_train.py::test_paper_configs_token_budget tests/test_train.py::test_command_line_wins_over_config_files_in_any_order tests/test_train.py::test_config_errors tests/test_train.py::test_unknown_key_in_config_file tests/test_train.py::test_config_values_and_their_errors_word_for_word tests/test_train.py::test_templates_of_out_dir_and_wandb_run_name tests/test_train.py::test_config_files_include_and_skip_what_is_not_a_key tests/test_train.py::test_grad_accum_steps_and_its_two_fixes tests/test_train.py::test_config_diff tests/test_scripts.py::test_reproduce_small_commands_resolve tests/test_preflight.py --deselect tests/test_preflight.py::test_reproduce_paper_stops_before_training_on_a_planted_missing_package_and_full_disk --deselect tests/test_preflight.py::test_a_missing_package_and_a_full_disk_are_reported_together"
  # test_train.py's configuration tests only (its others train models: seconds for each mutant, and they load
  # their configs the same way); the two preflight tests left out run scripts/reproduce_paper.sh (25 and 7 s); so
  # do test_scripts.py's others, whose child python imports the mutated configurator.py without mutmut (they fail)
  [runinfo.py]="tests/test_runinfo.py"
  # the other tests reach runinfo.py through whole training and evaluation runs (seconds for each mutant)
  [harness.py]="tests/test_downstream.py"
  [data/tokenizer.py]="tests/test_tokenizer.py tests/test_bytes.py --deselect tests/test_bytes.py::test_what_does_not_fit_the_shards_is_a_clear_error --deselect tests/test_bytes.py::test_train_sweep_sample_on_bytes"
  # the two test_bytes.py tests left out train models (30 s for each mutant they reach)
  [train.py]="tests/test_train_step.py tests/test_train_launch.py tests/test_train.py tests/test_determinism.py --deselect tests/test_train.py::test_wandb_offline_writes_files --deselect tests/test_train.py::test_resume_after_kill_is_exact --deselect tests/test_train.py::test_torchrun_two_processes_match_one --deselect tests/test_determinism.py::test_two_ranks_launch_rank_0s_tiles --deselect tests/test_determinism.py::test_resumed_run_launches_the_checkpoints_tiles_and_loses_the_same"
  # tests/test_determinism.py checks pin_kernel_tiles in-process (its two slow tests run torchrun or two whole runs)
  [kernels/lssa_triton.py]="tests/test_kernel_dispatch.py tests/test_determinism.py tests/test_kernels.py --deselect tests/test_determinism.py::test_two_ranks_launch_rank_0s_tiles --deselect tests/test_determinism.py::test_resumed_run_launches_the_checkpoints_tiles_and_loses_the_same --deselect tests/test_kernels.py::test_interpreter_matches_reference --deselect tests/test_kernels.py::test_interpreter_under_torch_compile --deselect tests/test_kernels.py::test_backward_materialises_no_zero_gradients --deselect tests/test_kernels.py::test_failing_kernel_falls_back_with_one_warning --deselect tests/test_kernels.py::test_interpreter_training_curve_matches_reference --deselect tests/test_kernels.py::test_kernels_compile_for_an_h100 --deselect tests/test_kernel_dispatch.py::test_every_lssa_triton_variable_is_validated"
  # the host code of the kernels (mutmut leaves the @triton.jit functions alone: it skips decorated ones):
  # tests/test_kernel_dispatch.py runs the kernels under the interpreter in its own process; the tests of
  # test_kernels.py left out run them in child processes only (not mapped to a mutant, 30 s of each run's start);
  # the sm_90 compile test too (it failed once after this selection's other tests, beside other runs: cause unknown),
  # and the test that reads the module's source for LSSA_TRITON_ names (mutmut's copy holds every mutant's text)
  [scripts/paper_plan.py]="tests/test_reproduce_paper.py --deselect tests/test_reproduce_paper.py::test_reproduce_paper_end_to_end_at_toy_scale --deselect tests/test_reproduce_paper.py::test_the_toy_pass_runs_first_in_a_scratch_folder_and_stops_the_run_when_it_fails"
  [scripts/report.py]="tests/test_report.py tests/test_docs_tables.py --deselect tests/test_docs_tables.py::test_the_cost_block_is_what_the_dry_run_prints"
  # the tests left out run scripts/reproduce_paper.sh (a toy training run, or its dry run): the scripts run in a
  # child python there, which mutmut does not see; tests/test_reproduce_paper.py checks paper_plan.py's functions
  # in-process (tests/test_docs_tables.py reaches them too, through whole pages: seconds more for each mutant)
  [data/sources.py]="tests/test_sources.py tests/test_data.py::test_wiki_markup_and_gutenberg_stripping"
  # downloads and archives stood in for in-process; the tests that read the real pinned archives (the tokenizer's,
  # test_data.py's test_prepare_embedded) take seconds for each mutant they reach, and the fast tests check the same functions
  [eval_downstream.py]="tests/test_downstream.py --deselect tests/test_downstream.py::test_tiny_generation_task_end_to_end --deselect tests/test_downstream.py::test_tiny_task_end_to_end --deselect tests/test_downstream.py::test_a_window_relative_to_the_training_context --deselect tests/test_downstream.py::test_without_lm_eval_the_command_says_how_to_install"
  # left out: lm-eval run on a checkpoint (the two end-to-end tests, seconds for each mutant of main they reach), the
  # window test that loads a checkpoint, and the one that runs the command in a child process (mutmut cannot map
  # it); the file's in-process tests stand in for lm-eval and the model and check the same functions directly
  [export_hf.py]="tests/test_hf.py::test_neox_state_dict_puts_each_heads_q_k_v_rows_together tests/test_hf.py::test_hf_config_of_ours_and_of_the_portable_export tests/test_hf.py::test_built_byte_tokenizer_gives_our_ids_and_its_files tests/test_hf.py::test_built_gpt2_tokenizer_gives_our_ids tests/test_hf.py::test_write_json_keeps_unicode_and_ends_with_a_newline tests/test_hf.py::test_model_card_word_for_word tests/test_hf.py::test_model_card_of_a_portable_export_without_losses_or_settings tests/test_hf.py::test_sweep_entries_are_this_checkpoints_runs tests/test_hf.py::test_export_writes_the_folder_in_one_step tests/test_hf.py::test_export_help_shows_every_arguments_help_and_the_module_docstring"
  # test_hf.py's tests of export_hf.py's parts and of export() on a small random checkpoint; its others export a
  # checkpoint of every attention type (or train one) and load the folders with transformers: seconds for each
  # mutant, checking the same functions through the loaded model
)
ORDER=(attention.py model.py eval_length.py checkpoint.py data/shards.py train.py data/prepare.py eval_passkey.py
       data/catalog.py hf_lssa.py configurator.py runinfo.py harness.py data/tokenizer.py data/sources.py
       eval_downstream.py export_hf.py kernels/lssa_triton.py scripts/paper_plan.py scripts/report.py)
# modules not mutated yet: the report counts their mutants (mutmut generates them without running a test) as not run
NOT_YET=()

# A scratch copy of the repo in $1 whose mutmut config mutates module $2 with the tests chosen for it.
scratch() {
  local dir=$1 module=$2
  git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$dir"
  # the config mutmut reads (pytest's own settings stay in pyproject.toml)
  {
    echo "[mutmut]"
    echo "source_paths = $module"
    echo "also_copy ="
    git ls-files --cached --others --exclude-standard | cut -d/ -f1 | sort -u | grep -vx "$module" | sed 's/^/    /'
    echo "pytest_add_cli_args_test_selection ="
    for t in ${TESTS[$module]:-tests}; do echo "    $t"; done
    echo "pytest_add_cli_args ="
    echo "    -p"
    echo "    no:cacheprovider"
    echo "process_isolation = forkserver"
    # a mutant that loops forever (the step counter never reaching max_iters) is stopped after
    # 10x (not mutmut's 30x) the CPU time its tests take: a timeout counts as killed anyway
    echo "timeout_multiplier = 5"
    # mutmut also stops a mutant after (its tests' time + timeout_constant) x 5 seconds of wall clock:
    # with its default of 1 s, tests of a few hundredths of a second got 5 s, which pytest's start in
    # the forked child overran on a loaded machine (false "timeouts", counted as killed)
    echo "timeout_constant = 30"
  } > "$dir/setup.cfg"
  sed -i '/^\[tool.pytest.ini_options\]/,$!d' "$dir/pyproject.toml"  # only pytest's section
}

# Every mutant of a module, generated by mutmut without running a test ($WORK/<module>.list/names.txt):
# the report's list of mutants, their diffs, and the counts of modules not run.
list_mutants() {
  local dir="$WORK/${1//\//_}.list"
  rm -rf "$dir" && mkdir -p "$dir" && scratch "$dir" "$1"
  (cd "$dir" && python -c "import os, mutmut.__main__ as m
m.set_mutant_under_test('mutant_generation'); os.makedirs('mutants', exist_ok=True)
m.copy_src_dir(); m.setup_source_paths(); m.create_mutants(1)" > /dev/null && python -m mutmut results --all true > names.txt)
}

if [[ ${1:-} == --changed ]]; then
  # only the mutants of the functions changed since BASE (committed or not), each module with its tests
  base=${2:-$(git merge-base HEAD main 2>/dev/null || echo HEAD~1)}
  git diff --quiet "$base" -- . 2>/dev/null && base=HEAD~1   # on main with nothing changed: the last commit
  echo "== mutants of the functions changed since $(git rev-parse --short "$base")"
  start=$(date +%s)
  for module in "${ORDER[@]}"; do
    globs=$(python tools/mutation_report.py --changed "$base" "$module")
    [[ -z $globs ]] && continue
    echo "$module: $globs"
    NO_REPORT=1 RUN_TAG=changed MUTANTS="$globs" bash "$PWD/tools/mutation.sh" "$module" > /dev/null
    # what the tests did not kill (mutmut show NAME in that directory gives its diff)
    grep -E ': (survived|no tests|suspicious)$' "$WORK/${module//\//_}.changed/results.txt" || echo "   every one killed"
  done
  echo "== --changed took $(( $(date +%s) - start )) s"
  exit 0
fi

if [[ ${1:-} != --report ]]; then
  modules=("$@")
  [[ ${#modules[@]} -gt 0 ]] || modules=("${ORDER[@]}")
  for module in "${modules[@]}"; do
    [[ -n ${TESTS[$module]:-} ]] || { echo "no test files chosen for $module; add it to TESTS in $0" >&2; exit 1; }
    dir="$WORK/${module//\//_}${RUN_TAG:+.$RUN_TAG}"
    if [[ -n ${KEEP:-} && -d $dir/mutants ]]; then
      echo "continued on $(date -u +%F) at $(git rev-parse --short HEAD)" >> "$dir/continued"
    else
      rm -rf "$dir" && mkdir -p "$dir"
    fi
    scratch "$dir" "$module"
    python tools/mutation_report.py --commit > "$dir/commit"   # the code the run tests, recorded with its verdicts
    echo "== $module: tests ${TESTS[$module]}"
    start=$(date +%s)
    (cd "$dir" && python -m mutmut run --max-children "${MAX_CHILDREN:-2}" ${MUTANTS:-} > run.log 2>&1) || true
    if [[ -n ${KEEP:-} ]]; then  # the tests may have changed too: try the survivors again
      survivors=$(cd "$dir" && python -m mutmut results --all true 2>/dev/null | sed -n 's/^ *\(.*\): survived$/\1/p')
      [[ -z $survivors ]] || (cd "$dir" && python -m mutmut run --max-children "${MAX_CHILDREN:-2}" $survivors >> run.log 2>&1) || true
    fi
    (cd "$dir" && python -m mutmut export-cicd-stats > /dev/null 2>&1; python -m mutmut results --all true > results.txt 2>&1) || true
    took=$(( $(date +%s) - start ))
    echo $(( took + $(cat "$dir/seconds" 2>/dev/null || echo 0) )) > "$dir/seconds"  # a continued run adds up
    echo "${MUTANTS:-}" > "$dir/selection"
    python tools/mutation_report.py --record "$dir" "$module" "$took" ${KEEP:+continued} ${MUTANTS:-}
    tail -c 120 "$dir/run.log"; echo
  done
fi
[[ -z ${NO_REPORT:-} ]] || exit 0
for module in "${ORDER[@]}" "${NOT_YET[@]}"; do   # every mutant's name and diff, for the report (the store has no diffs)
  [[ -f $WORK/${module//\//_}.list/names.txt && -z $(git status --porcelain -- "$module") && \
     $WORK/${module//\//_}.list/names.txt -nt $module ]] || list_mutants "$module"
done
python tools/mutation_report.py "$WORK" "${ORDER[@]}" -- "${NOT_YET[@]}" > results/mutation.md
echo "wrote results/mutation.md and results/mutation_excluded.md"
