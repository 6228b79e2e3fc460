# Tests of the `mistral4` command line: exit codes, messages, text and JSON output.
#
# This file has two roles:
#  - included from tests/CMakeLists.txt, it adds the CTest tests (label cpu);
#  - run as `cmake -P cli_tests.cmake -DEXE=… -DARGS=a|b|c -DEXPECT_RC=n [checks]`, it runs one
#    command and checks it (so a test can look at the exit code, stdout and stderr together).
#    Checks: STDOUT_1..9 / STDERR_1..9 (regular expressions that must match),
#    JSON_1..9 ("key.key.key=value": the output must be JSON and hold that value).
#    ARGS uses '|' between arguments; no check may contain ';'.

if(CMAKE_SCRIPT_MODE_FILE)
  string(REPLACE "|" ";" args "${ARGS}")
  execute_process(COMMAND "${EXE}" ${args}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(shown "command: ${EXE} ${ARGS}\nexit: ${rc}\n--- stdout ---\n${out}\n--- stderr ---\n${err}")
  include(${CMAKE_CURRENT_LIST_DIR}/check_run.cmake)
  m4_check_run("${rc}" "${out}" "${err}" "${shown}")
  foreach(i RANGE 1 9)
    if(DEFINED JSON_${i})
      m4_check_json("${out}" "${JSON_${i}}" "JSON" "${shown}")
    endif()
  endforeach()
  return()
endif()

set(M4_FIXTURE ${PROJECT_SOURCE_DIR}/tests/fixtures/mistral-small-4-119b-2603.config.json)
set(M4_TINY_CHECKPOINT ${PROJECT_BINARY_DIR}/tests/inspect-tiny-checkpoint)

# m4_cli_test(NAME EXPECT_RC rc ARGS a b c [CHECKS STDOUT_1=regex JSON_1=key=value …] [FIXTURES f])
function(m4_cli_test name)
  cmake_parse_arguments(T "" "EXPECT_RC" "ARGS;CHECKS;FIXTURES" ${ARGN})
  string(REPLACE ";" "|" args "${T_ARGS}")
  set(defines "")
  foreach(check ${T_CHECKS})
    list(APPEND defines "-D${check}")
  endforeach()
  add_test(NAME ${name}
    COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:mistral4> "-DARGS=${args}" -DEXPECT_RC=${T_EXPECT_RC}
            ${defines} -P ${CMAKE_CURRENT_FUNCTION_LIST_FILE})
  set_tests_properties(${name} PROPERTIES LABELS cpu TIMEOUT 60)
  if(T_FIXTURES)
    set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED "${T_FIXTURES}")
  endif()
endfunction()

# ---- top level
m4_cli_test(cli_help EXPECT_RC 0 ARGS --help
  CHECKS "STDOUT_1=Usage: mistral4 <command>" "STDOUT_2=inspect" "STDOUT_3=Exit status")
m4_cli_test(cli_version EXPECT_RC 0 ARGS --version
  CHECKS "STDOUT_1=^mistral4 ${PROJECT_VERSION}")
m4_cli_test(cli_no_arguments EXPECT_RC 2 ARGS ""
  CHECKS "STDERR_1=Usage: mistral4")
m4_cli_test(cli_unknown_command EXPECT_RC 2 ARGS frobnicate
  CHECKS "STDERR_1=mistral4: unknown command 'frobnicate'" "STDERR_2=Usage: mistral4")
m4_cli_test(cli_unknown_top_option EXPECT_RC 2 ARGS --frobnicate
  CHECKS "STDERR_1=unknown option '--frobnicate'")
if(M4_HAVE_CUDA)
  # the fast-path table (optimized/paths.h): each path off until a committed GPU run proves it
  m4_cli_test(cli_help_fast_paths EXPECT_RC 0 ARGS --help
    CHECKS "STDOUT_1=cuda-bf16 +CUDA" "STDOUT_2=Fast paths of cuda-fp32" "STDOUT_3=latent_tc +off +unproven"
           "STDOUT_4=twin: the CUDA-core flash-decoding split kernel" "STDOUT_5=M4_CUDA_ENABLE=name")
endif()
m4_cli_test(cli_help_inspect EXPECT_RC 0 ARGS help inspect
  CHECKS "STDOUT_1=Usage: mistral4 inspect PATH")

# ---- inspect: usage
m4_cli_test(cli_inspect_help EXPECT_RC 0 ARGS inspect --help
  CHECKS "STDOUT_1=Usage: mistral4 inspect PATH" "STDOUT_2=JSON fields" "STDOUT_3=Exit status")
m4_cli_test(cli_inspect_unknown_option EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --frobnicate
  CHECKS "STDERR_1=^mistral4 inspect: unknown option '--frobnicate'" "STDERR_2=mistral4 inspect --help")
m4_cli_test(cli_inspect_no_path EXPECT_RC 2 ARGS inspect
  CHECKS "STDERR_1=^mistral4 inspect: missing PATH")
m4_cli_test(cli_inspect_two_paths EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} ${M4_FIXTURE}
  CHECKS "STDERR_1=one PATH only")
m4_cli_test(cli_inspect_bad_context EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --context 0
  CHECKS "STDERR_1=--context wants a whole number")
m4_cli_test(cli_inspect_context_no_value EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --context
  CHECKS "STDERR_1=--context needs a value")
# issue #18: --gpus and --context refuse what is not a whole number in range, naming it
m4_cli_test(cli_inspect_context_negative EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --context -5 --gpus 2
  CHECKS "STDERR_1=^mistral4 inspect: --context wants a whole number in 1..4294967296, got '-5'"
         "STDERR_2=mistral4 inspect --help")
m4_cli_test(cli_inspect_context_huge EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --gpus 2 --context 4294967297
  CHECKS "STDERR_1=--context wants a whole number in 1..4294967296, got '4294967297'")
m4_cli_test(cli_inspect_context_past_int64 EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --context=99999999999999999999999
  CHECKS "STDERR_1=--context wants a whole number in 1..4294967296, got '99999999999999999999999'")
m4_cli_test(cli_inspect_context_not_a_number EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --context 4k
  CHECKS "STDERR_1=--context wants a whole number in 1..4294967296, got '4k'")
m4_cli_test(cli_inspect_gpus_zero EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --gpus 0
  CHECKS "STDERR_1=^mistral4 inspect: --gpus wants a whole number in 1..1024, got '0'"
         "STDERR_2=mistral4 inspect --help")
m4_cli_test(cli_inspect_gpus_not_a_number EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --gpus abc
  CHECKS "STDERR_1=--gpus wants a whole number in 1..1024, got 'abc'")
m4_cli_test(cli_inspect_gpus_negative EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --gpus=-3
  CHECKS "STDERR_1=--gpus wants a whole number in 1..1024, got '-3'")
m4_cli_test(cli_inspect_gpus_huge EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --gpus 99999999999999999999999
  CHECKS "STDERR_1=--gpus wants a whole number in 1..1024, got '99999999999999999999999'")
m4_cli_test(cli_inspect_gpus_no_value EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --gpus
  CHECKS "STDERR_1=--gpus needs a value")

# ---- inspect: failures of the work
m4_cli_test(cli_inspect_missing_path EXPECT_RC 1 ARGS inspect ${CMAKE_CURRENT_BINARY_DIR}/no-such-model
  CHECKS "STDERR_1=^mistral4 inspect: .*no-such-model")
m4_cli_test(cli_inspect_not_a_config EXPECT_RC 1 ARGS inspect ${CMAKE_CURRENT_LIST_FILE}
  CHECKS "STDERR_1=^mistral4 inspect: .*cli_tests.cmake")
file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/inspect-empty-folder)
m4_cli_test(cli_inspect_folder_without_config EXPECT_RC 1 ARGS inspect ${CMAKE_CURRENT_BINARY_DIR}/inspect-empty-folder
  CHECKS "STDERR_1=inspect-empty-folder.*config.json")

# ---- inspect: the published config
add_test(NAME cli_inspect_published COMMAND mistral4 inspect ${M4_FIXTURE})
set_tests_properties(cli_inspect_published PROPERTIES LABELS cpu TIMEOUT 60
  PASS_REGULAR_EXPRESSION "119,401,317,952")
m4_cli_test(cli_inspect_published_summary EXPECT_RC 0 ARGS inspect ${M4_FIXTURE}
  CHECKS "STDOUT_1=total +119,401,317,952"
         "STDOUT_2=text 118,972,826,624 \\+ vision 403,305,472 \\+ projector 25,166,848 \\+ FP8 scales 19,008"
         "STDOUT_3=dtypes inferred from config"
         "STDOUT_4=layers.{0..35}  x 36 layers"
         "STDOUT_5=mlp.experts.gate_up_proj +\\[128, 4096, 4096\\] +F8_E4M3"
         "STDOUT_6=routed experts +3,623,878,656 .*top-4 of 128"
         "STDOUT_7=One decode token at context 4096"
         "STDOUT_8=arithmetic intensity")
m4_cli_test(cli_inspect_published_json EXPECT_RC 0 ARGS inspect ${M4_FIXTURE} --json --context 8192
  CHECKS "JSON_1=params.total=119401317952" "JSON_2=params.text=118972826624"
         "JSON_3=params.vision=403305472" "JSON_4=params.projector=25166848"
         "JSON_5=params.fp8_scales=19008" "JSON_6=per_token.context=8192"
         "JSON_7=source.kind=config" "JSON_8=tensors.0.name=model.language_model.embed_tokens.weight"
         "JSON_9=config.text.num_experts_per_tok=4")
# issue #18: the expert-parallel plan; the figures are worked out by hand in tests/test_inspect.c
# (test_published_gpu_plan). 128 experts over 3 GPUs: the 43-expert GPUs decide the fit.
m4_cli_test(cli_inspect_gpus_plan EXPECT_RC 0 ARGS inspect ${M4_FIXTURE} --gpus 3
  CHECKS "STDOUT_1=Expert-parallel plan: 3 GPUs, context 4096, batch 1"
         "STDOUT_2=experts +of the 128 routed experts of every MoE layer, GPUs 0..1: 43 each. GPU 2: 42 each"
         "STDOUT_3=largest GPU \\(43 experts\\) +44.01 GB +40.99 GiB +84.88 GB +79.05 GiB"
         "STDOUT_4=fits H100 80 GB \\(78 GiB usable\\) +yes +no"
         "STDOUT_5=per decoded token +36 all-reduces of 8,192 bytes = 294,912 bytes"
         "STDOUT_6=2\\*\\(N-1\\)/N of it, 393,216 bytes"
         "STDOUT_7=   3 +43 +44.01 GB +yes +yes +84.88 GB +no +yes"
         "STDOUT_8=fewest GPUs: as stored H100 2, H200 1. bf16 H100 4, H200 2")
m4_cli_test(cli_inspect_gpus_json EXPECT_RC 0 ARGS inspect ${M4_FIXTURE} --gpus 3 --json
  CHECKS "JSON_1=gpu_plan.cache_bytes=94371840"
         "JSON_2=gpu_plan.storage.0.largest_gpu_bytes=44009710016"
         "JSON_3=gpu_plan.storage.0.bytes_per_expert=905970240"
         "JSON_4=gpu_plan.storage.1.largest_gpu_bytes=84882126848"
         "JSON_5=gpu_plan.storage.1.fits.H100=OFF"
         "JSON_6=gpu_plan.storage.1.fewest_gpus.H100=4"
         "JSON_7=gpu_plan.storage.1.per_gpu.2.experts=42"
         "JSON_8=gpu_plan.storage.1.per_gpu.2.first_expert=86"
         "JSON_9=gpu_plan.communication.message_bytes_per_token=294912")
m4_cli_test(cli_inspect_gpus_more_than_experts EXPECT_RC 1 ARGS inspect ${M4_FIXTURE} --gpus 129
  CHECKS "STDERR_1=^mistral4 inspect: .*: 129 GPUs: expert parallelism gives each GPU at least one of the 128 routed experts")
m4_cli_test(cli_inspect_all_layers EXPECT_RC 0 ARGS inspect ${M4_FIXTURE} --all-layers
  CHECKS "STDOUT_1=model.language_model.layers.35.mlp.experts.down_proj "
         "STDOUT_2=model.vision_tower.transformer.layers.23.ffn_norm.weight")
file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/inspect-config-folder)
file(COPY_FILE ${M4_FIXTURE} ${CMAKE_CURRENT_BINARY_DIR}/inspect-config-folder/config.json ONLY_IF_DIFFERENT)
m4_cli_test(cli_inspect_config_folder EXPECT_RC 0 ARGS inspect ${CMAKE_CURRENT_BINARY_DIR}/inspect-config-folder
  CHECKS "STDOUT_1=dtypes inferred from config" "STDOUT_2=119,401,317,952")

# JSON through an independent parser too, where python3 exists (it does on CI).
find_program(M4_PYTHON3 python3)
find_program(M4_BASH bash)
if(M4_PYTHON3 AND M4_BASH)
  add_test(NAME cli_inspect_json_tool
    COMMAND ${M4_BASH} -c "set -o pipefail; \"$0\" inspect --json \"$1\" | \"$2\" -m json.tool > /dev/null"
            $<TARGET_FILE:mistral4> ${M4_FIXTURE} ${M4_PYTHON3})
  set_tests_properties(cli_inspect_json_tool PROPERTIES LABELS cpu TIMEOUT 60)
endif()

# ---- inspect: a checkpoint (written by test_inspect: legacy names, norms stored F32, no
# activation scales, one dense layer before two MoE layers)
if(TEST test_inspect)
  set_tests_properties(test_inspect PROPERTIES FIXTURES_SETUP m4_inspect_tiny_checkpoint)
  target_link_libraries(test_inspect PRIVATE m4_cli)
  m4_cli_test(cli_inspect_checkpoint EXPECT_RC 0 ARGS inspect ${M4_TINY_CHECKPOINT}
    FIXTURES m4_inspect_tiny_checkpoint
    CHECKS "STDOUT_1=checkpoint: 1 shard, [0-9]+ tensors" "STDOUT_2=dtypes as stored"
           "STDOUT_3=input_layernorm.weight +\\[32\\] +F32"
           "STDOUT_4=layers.0  x 1 layer, each"
           "STDOUT_5=layers.{1..2}  x 2 layers, each"
           "STDOUT_6=mlp.gate_proj.weight +\\[48, 32\\] +F8_E4M3")
  m4_cli_test(cli_inspect_checkpoint_json EXPECT_RC 0 ARGS inspect ${M4_TINY_CHECKPOINT} --json
    FIXTURES m4_inspect_tiny_checkpoint
    CHECKS "JSON_1=source.kind=checkpoint" "JSON_2=source.shards=1" "JSON_3=source.dtypes=on_disk")
  # issue #18: the plan from the dtypes on disk; layer 0 is dense, so 2 MoE layers of 4 experts
  m4_cli_test(cli_inspect_checkpoint_gpus EXPECT_RC 0 ARGS inspect ${M4_TINY_CHECKPOINT} --gpus 4 --json
    FIXTURES m4_inspect_tiny_checkpoint
    CHECKS "JSON_1=gpu_plan.communication.moe_layers=2" "JSON_2=gpu_plan.storage.0.bytes_per_expert=3088"
           "JSON_3=gpu_plan.storage.0.per_gpu.3.first_expert=3")
  m4_cli_test(cli_inspect_checkpoint_more_gpus_than_experts EXPECT_RC 1 ARGS inspect ${M4_TINY_CHECKPOINT} --gpus 5
    FIXTURES m4_inspect_tiny_checkpoint
    CHECKS "STDERR_1=inspect-tiny-checkpoint: 5 GPUs: expert parallelism gives each GPU at least one of the 4 routed experts \\(1 .. 4 GPUs\\)")
endif()

# ---- conform ---------------------------------------------------------------------------------
set(M4_TINY_CASE ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny)
m4_cli_test(cli_conform_text_tiny EXPECT_RC 0 ARGS conform --case ${M4_TINY_CASE} --quiet
  CHECKS "STDOUT_1=ref on text_tiny: [0-9]+ passed, 0 failed, 0 errors")
m4_cli_test(cli_conform_table EXPECT_RC 0 ARGS conform --case ${M4_TINY_CASE} --only text.layers.0.mlp*
  CHECKS "STDOUT_1=text.layers.0.mlp.gate +\\[20, 16\\].*PASS" "STDOUT_2=top-k sets identical")
m4_cli_test(cli_conform_no_match EXPECT_RC 1 ARGS conform --case ${M4_TINY_CASE} --only nothing.matches
  CHECKS "STDERR_1=no component")
m4_cli_test(cli_conform_not_a_case EXPECT_RC 1 ARGS conform --case ${PROJECT_SOURCE_DIR}/tests
  CHECKS "STDERR_1=not a golden case folder")
m4_cli_test(cli_conform_missing_golden EXPECT_RC 1 ARGS conform --model ${M4_TINY_CASE}/model --golden /nonexistent.h5
  CHECKS "STDERR_1=/nonexistent.h5: cannot open the golden file: No such file or directory")
# Issue #18: a model other than the golden's is refused before any row (it ran 52 rows and failed
# them from text.embed_tokens on), naming every differing field the forward pass reads.
m4_cli_test(cli_conform_golden_of_another_model EXPECT_RC 1 ARGS conform --model ${PROJECT_SOURCE_DIR}/golden/cases/routing_variants/model --golden ${M4_TINY_CASE}/text_tiny.h5 --quiet
  CHECKS "STDERR_1=golden .*text_tiny.h5 was made with num_hidden_layers = 2, the model has 3; n_shared_experts = 1, the model has 2;"
         "STDERR_2=rms_norm_eps = 1e-05, the model has 1e-06 \\(the model: .*routing_variants/model/config.json\\): no row can match")
m4_cli_test(cli_conform_usage EXPECT_RC 2 ARGS conform --backend nope --case ${M4_TINY_CASE}
  CHECKS "STDERR_1=unknown backend")
m4_cli_test(cli_conform_help EXPECT_RC 0 ARGS conform --help CHECKS "STDOUT_1=teacher-forced"
  "STDOUT_2=--no-progress" "STDOUT_3=Bundled cases \\(--case [^\n]*/golden/cases/NAME\\):"
  "STDOUT_4=\n  text_tiny +text model: MLA" "STDOUT_5=\n  preprocess +images only, no model")
# Every bundled case is listed with its line (a case added without one says so).
file(GLOB m4_bundled_cases LIST_DIRECTORIES true RELATIVE ${PROJECT_SOURCE_DIR}/golden/cases ${PROJECT_SOURCE_DIR}/golden/cases/*)
set(m4_case_checks "")
set(m4_case_index 1)
foreach(m4_case ${m4_bundled_cases})
  list(APPEND m4_case_checks "STDOUT_${m4_case_index}=\n  ${m4_case} +[^ (]")
  math(EXPR m4_case_index "${m4_case_index} + 1")
endforeach()
m4_cli_test(cli_conform_help_lists_cases EXPECT_RC 0 ARGS conform --help CHECKS ${m4_case_checks})
# --case: a folder that does not exist, and the image-only preprocess case, each said for what it is
m4_cli_test(cli_conform_case_missing EXPECT_RC 1 ARGS conform --case ${PROJECT_SOURCE_DIR}/golden/cases/no_such_case
  CHECKS "STDERR_1=--case [^\n]*/golden/cases/no_such_case: no such folder")
m4_cli_test(cli_conform_case_images_only EXPECT_RC 1 ARGS conform --case ${PROJECT_SOURCE_DIR}/golden/cases/preprocess
  CHECKS "STDERR_1=golden/cases/preprocess: an image-preprocessing case \\(images and preprocess.h5, no model/\\)"
         "STDERR_2=mistral4 preprocess IMAGE")
# The table's legend, blank times on stage rows, and "wrote PATH" for both reports.
m4_cli_test(cli_conform_legend_and_wrote EXPECT_RC 0
  ARGS conform --case ${M4_TINY_CASE} --only text.layers.0.self_attn*
       --report ${CMAKE_CURRENT_BINARY_DIR}/conform-legend.json --junit ${CMAKE_CURRENT_BINARY_DIR}/conform-legend.xml
  CHECKS "STDOUT_1=\nbudget%: rel L2 as a share of the row's budget \\(float32"
         "STDOUT_2=\nBlank time: a stage row" "STDOUT_3=\nsoftmax scale mscale2: the MLA scale rule"
         "STDOUT_4=self_attn.q_rot +\\[[0-9, ]+\\] +[0-9.e+-]+ +[0-9.e+-]+ +[0-9.]+ +[0-9.]+ +PASS"
         "STDOUT_5=\nwrote [^\n]*conform-legend.json\n" "STDOUT_6=\nwrote [^\n]*conform-legend.xml\n")
m4_cli_test(cli_conform_no_legend EXPECT_RC 0 ARGS conform --case ${M4_TINY_CASE} --only text.norm --no-legend
  CHECKS "STDOUT_1=1 passed[^\n]*\n$")
# Progress when stderr is not a terminal: none unless --progress, then one plain line per row
# with its number of the total; --progress and --no-progress together are a usage error.
m4_cli_test(cli_conform_progress_lines EXPECT_RC 0 ARGS conform --case ${M4_TINY_CASE} --only text.layers.0.mlp* --progress
  CHECKS "STDERR_1=^\\[1/4\\] text.layers.0.mlp.gate +PASS\n" "STDERR_2=\n\\[4/4\\] text.layers.0.mlp +PASS\n$")
# On a terminal: one line rewritten in place, never a newline (tests/progress_terminal.sh).
find_program(M4_SCRIPT script)
if(M4_SCRIPT)
  add_test(NAME cli_conform_progress_terminal
    COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/progress_terminal.sh $<TARGET_FILE:mistral4> ${M4_TINY_CASE})
  set_tests_properties(cli_conform_progress_terminal PROPERTIES LABELS cpu TIMEOUT 60)
endif()
m4_cli_test(cli_conform_progress_contradiction EXPECT_RC 2 ARGS conform --case ${M4_TINY_CASE} --progress --no-progress
  CHECKS "STDERR_1=--progress and --no-progress contradict")
m4_cli_test(cli_conform_candidate_not_hdf5 EXPECT_RC 1
  ARGS conform --golden ${M4_TINY_CASE}/text_tiny.h5 --candidate ${PROJECT_SOURCE_DIR}/README.md
  CHECKS "STDERR_1=candidate: .*README.md: missing or not an HDF5 file")
m4_cli_test(cli_conform_candidate_missing EXPECT_RC 1
  ARGS conform --golden ${M4_TINY_CASE}/text_tiny.h5 --candidate /nonexistent/theirs.h5
  CHECKS "STDERR_1=candidate: /nonexistent/theirs.h5: cannot open the golden file: No such file or directory")
m4_cli_test(cli_conform_candidate_with_backend EXPECT_RC 2
  ARGS conform --case ${M4_TINY_CASE} --candidate ${M4_TINY_CASE}/text_tiny.h5 --backend ref
  CHECKS "STDERR_1=--candidate replaces --backend")
m4_cli_test(cli_conform_candidate_no_golden EXPECT_RC 2 ARGS conform --candidate ${M4_TINY_CASE}/text_tiny.h5
  CHECKS "STDERR_1=--candidate needs --golden")

# The reports validate: JSON through python's parser, JUnit through xmllint (libxml2-utils).
find_program(XMLLINT xmllint)
find_package(Python3 COMPONENTS Interpreter)
if(XMLLINT AND Python3_Interpreter_FOUND)
  add_test(NAME cli_conform_reports_validate
    COMMAND sh -c "set -e; d=$(mktemp -d); \"$<TARGET_FILE:mistral4>\" conform --case ${M4_TINY_CASE} --quiet --report $d/r.json --junit $d/r.xml; \"${Python3_EXECUTABLE}\" -m json.tool $d/r.json >/dev/null; \"${XMLLINT}\" --noout $d/r.xml; test \"$(\"${XMLLINT}\" --xpath 'count(//testcase)' $d/r.xml)\" -gt 30; rm -rf $d")
  set_tests_properties(cli_conform_reports_validate PROPERTIES LABELS cpu TIMEOUT 60)
endif()

# ---- run ---------------------------------------------------------------------------------------
# Greedy generation on the golden tiny models must give Hugging Face generate()'s ids. The tiny
# models have no tokenizer, so the prompts are --ids. The goldens were made with transformers
# 5.24, whose MLA softmax scale is the mscale2 rule, hence --scale-rule mscale2 (MODEL.md §0.1).
set(M4_RUN_CASES ${PROJECT_SOURCE_DIR}/golden/cases)
m4_cli_test(cli_run_help EXPECT_RC 0 ARGS run --help
  CHECKS "STDOUT_1=Usage: mistral4 run --model DIR" "STDOUT_2=--scale-rule RULE" "STDOUT_3=mscale2"
         "STDOUT_4=Exit status")
# From HF generate() in golden/cases/text_tiny/text_tiny.h5, /generate/ids row 0: prompt
# 11 11 11 1 331 439 199 422 397 420 (left-padded by 3: padding is invisible to the real tokens,
# so the unpadded prompt gives the same tokens) → new tokens 210 62 124 93.
m4_cli_test(cli_run_text_tiny_row0 EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,331,439,199,422,397,420 --max-tokens 4
       --scale-rule mscale2
  CHECKS "STDOUT_1=^210 62 124 93[^0-9]*$" "STDERR_1=no tokenizer found" "STDERR_2=tokens/s"
         "STDERR_3=generated 4 tokens")
# text_tiny.h5 /generate/ids row 1: prompt 1 108 210 506 475 168 110 370 232 259 → 286 288 245 211.
m4_cli_test(cli_run_text_tiny_row1 EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,108,210,506,475,168,110,370,232,259
       --max-tokens 4 --scale-rule mscale2
  CHECKS "STDOUT_1=^286 288 245 211[^0-9]*$")
# routing_variants.h5 /generate/ids row 0: prompt 1 57 218 199 22 195 501 63 334 → 402 287 448 71.
m4_cli_test(cli_run_routing_variants EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/routing_variants/model --ids 1,57,218,199,22,195,501,63,334
       --max-tokens 4 --scale-rule mscale2
  CHECKS "STDOUT_1=^402 287 448 71[^0-9]*$")
# multimodal.h5: the two image files through our preprocessing and vision path; each [IMG] (10)
# of --ids is expanded like HF's processor did (/inputs/input_ids holds the expanded 39 ids);
# /generate/ids → 6 107 273 472.
m4_cli_test(cli_run_multimodal EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/multimodal/model --ids 1,434,172,10,185,386,10,327,461,68
       --image ${M4_RUN_CASES}/multimodal/image0_rgb_30x19.png
       --image ${M4_RUN_CASES}/multimodal/image1_rgba_22x40.png --max-tokens 4 --scale-rule mscale2
  CHECKS "STDOUT_1=^6 107 273 472[^0-9]*$" "STDERR_1=prompt 39 tokens")
# fp8.h5 (FP8 E4M3 checkpoint, one image): /generate/ids → 424 297 237 293.
m4_cli_test(cli_run_fp8 EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/fp8/model --ids 1,312,21,10,144,359,298
       --image ${M4_RUN_CASES}/fp8/image0_rgb_30x19.png --max-tokens 4 --scale-rule mscale2
  CHECKS "STDOUT_1=^424 297 237 293[^0-9]*$" "STDERR_1=prompt 21 tokens")
m4_cli_test(cli_run_sampled EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,331,439 --temperature 0.8 --top-k 50
       --top-p 0.9 --seed 7 --max-tokens 6
  CHECKS "STDOUT_1=^[0-9]+( [0-9]+)*[^0-9]*$" "STDERR_1=generated 6 tokens")

# run: usage errors (exit 2) and failures (exit 1)
m4_cli_test(cli_run_no_prompt EXPECT_RC 2 ARGS run --model ${M4_RUN_CASES}/text_tiny/model
  CHECKS "STDERR_1=exactly one of --prompt, --chat and --ids")
m4_cli_test(cli_run_no_model EXPECT_RC 2 ARGS run --ids 1,2 CHECKS "STDERR_1=missing --model")
m4_cli_test(cli_run_bad_ids EXPECT_RC 2 ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,2,x
  CHECKS "STDERR_1=neither a token id nor special token text")
# Issue #18, fault 8: an empty item was skipped ("1,,2" ran as two tokens), a temperature the
# sampler cannot divide the logits by (below M4_SAMPLING_MIN_TEMPERATURE) was accepted and failed
# at the first sampled token, 1e-50 silently became 0 (greedy), and counts took a '+' or spaces.
m4_cli_test(cli_run_ids_empty_item EXPECT_RC 2 ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,,2
  CHECKS "STDERR_1=--ids: item 2 of '1,,2' is empty")
m4_cli_test(cli_run_ids_trailing_comma EXPECT_RC 2 ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,2,
  CHECKS "STDERR_1=--ids: item 3 of '1,2,' is empty")
m4_cli_test(cli_run_ids_signed EXPECT_RC 2 ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,+2
  CHECKS "STDERR_1='\\+2' in '1,\\+2' is neither a token id")
m4_cli_test(cli_run_temperature_too_small EXPECT_RC 2
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,331 --temperature 1e-45
  CHECKS "STDERR_1=--temperature wants 0 or a number in \\[1e-06, 1e\\+06\\], got '1e-45'")
m4_cli_test(cli_run_temperature_below_float EXPECT_RC 2
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,331 --temperature 1e-50
  CHECKS "STDERR_1=--temperature wants 0 or a number in")
m4_cli_test(cli_run_temperature_at_the_limit EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,331 --temperature 1e-6 --max-tokens 2
  CHECKS "STDOUT_1=^218 329")
m4_cli_test(cli_run_count_with_plus EXPECT_RC 2
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,331 --max-tokens +2
  CHECKS "STDERR_1=--max-tokens wants a whole number >= 1, got '\\+2'")
m4_cli_test(cli_bench_prompt_trailing_comma EXPECT_RC 2
  ARGS bench --model ${M4_RUN_CASES}/text_tiny/model --prompt 16,
  CHECKS "STDERR_1=--prompt: item 2 of '16,' is empty")
m4_cli_test(cli_run_bad_reasoning EXPECT_RC 2
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1 --reasoning medium
  CHECKS "STDERR_1=none or high")
m4_cli_test(cli_run_bad_backend EXPECT_RC 2
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1 --backend tpu
  CHECKS "STDERR_1=unknown backend 'tpu'")
m4_cli_test(cli_run_bad_scale_rule EXPECT_RC 2
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1 --scale-rule yarn
  CHECKS "STDERR_1=base or mscale2")
m4_cli_test(cli_run_top_p_greedy EXPECT_RC 2
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1 --top-p 0.5
  CHECKS "STDERR_1=need --temperature")
m4_cli_test(cli_run_prompt_without_tokenizer EXPECT_RC 1
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --prompt hello
  CHECKS "STDERR_1=tekken.json not found")
m4_cli_test(cli_run_image_text_model EXPECT_RC 1
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,10 --image ${M4_RUN_CASES}/fp8/image0_rgb_30x19.png
  CHECKS "STDERR_1=images need a multimodal model")
m4_cli_test(cli_run_image_count EXPECT_RC 1
  ARGS run --model ${M4_RUN_CASES}/fp8/model --ids 1,10,10 --image ${M4_RUN_CASES}/fp8/image0_rgb_30x19.png
  CHECKS "STDERR_1=1 image but 2 \\[IMG\\] placeholders")
m4_cli_test(cli_run_id_outside_vocab EXPECT_RC 1
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,512
  CHECKS "STDERR_1=outside the vocabulary \\[0, 512\\)")
string(REPEAT "5," 256 m4_run_long_ids)   # max_position_embeddings of the tiny models is 256
string(APPEND m4_run_long_ids "5")        # 257 ids (a trailing comma is an empty item)
m4_cli_test(cli_run_prompt_too_long EXPECT_RC 1
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids ${m4_run_long_ids}
  CHECKS "STDERR_1=257 tokens, more than the model's max_position_embeddings \\(256\\)")

# run with a tokenizer: the text_tiny model beside a v15 tekken file whose vocabulary is cut to
# the model's 512 ids (tests/fixtures/tokenizer/tekken_v15_synthetic.json with default_vocab_size
# 512). The weights are random, so only the plumbing is checked: the chat template, streaming
# text, the stats.
set(M4_RUN_TOK ${CMAKE_CURRENT_BINARY_DIR}/run-tiny-with-tokenizer)
file(MAKE_DIRECTORY ${M4_RUN_TOK})
file(GLOB m4_run_model_files ${M4_RUN_CASES}/text_tiny/model/*)
file(COPY ${m4_run_model_files} DESTINATION ${M4_RUN_TOK})
file(READ ${PROJECT_SOURCE_DIR}/tests/fixtures/tokenizer/tekken_v15_synthetic.json m4_run_tekken)
string(REPLACE "\"default_vocab_size\":2100" "\"default_vocab_size\":512" m4_run_tekken "${m4_run_tekken}")
file(WRITE ${M4_RUN_TOK}/tekken.json "${m4_run_tekken}")
unset(m4_run_tekken)
file(WRITE ${M4_RUN_TOK}/chat.json [=[
[{"role": "system", "content": "Be brief."},
 {"role": "user", "content": "Hi"},
 {"role": "assistant", "content": [{"type": "thinking", "thinking": "greet"}, {"type": "text", "text": "Hello!"}]},
 {"role": "user", "content": [{"type": "text", "text": "Tell me more."}]}]
]=])
file(WRITE ${M4_RUN_TOK}/ends_with_assistant.json
  [=[[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]]=])
# (test_chat checks the template's ids against mistral-common; here only that it is used)
m4_cli_test(cli_run_prompt_template EXPECT_RC 0
  ARGS run --model ${M4_RUN_TOK} --prompt "Hello, world!" --max-tokens 3 --scale-rule mscale2
  CHECKS "STDERR_1=prompt [0-9]+ tokens" "STDERR_2=generated 3 tokens")
m4_cli_test(cli_run_chat_file EXPECT_RC 0
  ARGS run --model ${M4_RUN_TOK} --chat ${M4_RUN_TOK}/chat.json --reasoning high --max-tokens 3
  CHECKS "STDERR_1=generated 3 tokens")
m4_cli_test(cli_run_chat_ends_with_assistant EXPECT_RC 1
  ARGS run --model ${M4_RUN_TOK} --chat ${M4_RUN_TOK}/ends_with_assistant.json
  CHECKS "STDERR_1=Expected last role User or Tool \\(or Assistant with prefix\\) for serving but got assistant")
m4_cli_test(cli_run_raw_prompt EXPECT_RC 0
  ARGS run --model ${M4_RUN_TOK} --prompt x --raw --max-tokens 2 CHECKS "STDERR_1=prompt 2 tokens")
m4_cli_test(cli_run_ids_special_text EXPECT_RC 0
  ARGS run --model ${M4_RUN_TOK} --ids <s>,[INST],300,[/INST] --max-tokens 2 CHECKS "STDERR_1=prompt 4 tokens")
m4_cli_test(cli_run_ids_unknown_special EXPECT_RC 1
  ARGS run --model ${M4_RUN_TOK} --ids <s>,[FOO] CHECKS "STDERR_1=unknown special token text: .*\\[FOO\\]")
m4_cli_test(cli_run_ids_special_without_tokenizer EXPECT_RC 1
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids <s>,5 CHECKS "STDERR_1=no tokenizer")

# run --print-prompt: the ids fed and their positions on stderr, then generation as usual; the
# same ids as `mistral4 tokenize` gives for the same prompt and model folder.
m4_cli_test(cli_run_print_prompt EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/text_tiny/model --ids 1,331,439 --max-tokens 1 --print-prompt
  CHECKS "STDERR_1=the prompt: 3 tokens at positions 0\\.\\.2:\n1 331 439\n" "STDERR_2=generated 1 tokens")
add_test(NAME cli_run_print_prompt_is_tokenize
  COMMAND sh -c "set -e; want=$(\"$0\" tokenize --model \"$1\" --prompt 'Hello, world!' 2>/dev/null); got=$(\"$0\" run --model \"$1\" --prompt 'Hello, world!' --max-tokens 1 --print-prompt 2>&1 >/dev/null | sed -n '/the prompt: /{n;p;}'); echo \"tokenize: $want\"; echo \"run:      $got\"; [ -n \"$got\" ] && [ \"$got\" = \"$want\" ]"
          $<TARGET_FILE:mistral4> ${M4_RUN_TOK})
set_tests_properties(cli_run_print_prompt_is_tokenize PROPERTIES LABELS cpu TIMEOUT 60)

# run --start-position: golden/cases/long_positions row 0 was generated by HF at positions
# 197..208 (/inputs/position_ids; its new tokens continue at 209): /generate/ids → 366 156 296 231.
# Greedy happens to give the same 4 tokens from position 0 (RoPE is relative; only the llama4
# query scale of block floor(197/64) = 3 differs), so a sampled run shows the positions reach
# the model: the same seed draws other tokens from 197 than from 0.
set(m4_long_row0 1,447,413,448,353,212,323,119,441,395,380,137)
m4_cli_test(cli_run_start_position_golden EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/long_positions/model --ids ${m4_long_row0} --max-tokens 4
       --scale-rule mscale2 --start-position 197 --print-prompt
  CHECKS "STDOUT_1=^366 156 296 231[^0-9]*$" "STDERR_1=12 tokens at positions 197\\.\\.208")
add_test(NAME cli_run_start_position_moves
  COMMAND sh -c "set -e; a=$(\"$0\" run --model \"$1\" --ids \"$2\" --max-tokens 4 --temperature 1 --seed 3 2>/dev/null); b=$(\"$0\" run --model \"$1\" --ids \"$2\" --max-tokens 4 --temperature 1 --seed 3 --start-position 197 2>/dev/null); echo \"from 0: $a\"; echo \"from 197: $b\"; [ -n \"$a\" ] && [ -n \"$b\" ] && [ \"$a\" != \"$b\" ]"
          $<TARGET_FILE:mistral4> ${M4_RUN_CASES}/long_positions/model ${m4_long_row0})
set_tests_properties(cli_run_start_position_moves PROPERTIES LABELS cpu TIMEOUT 60)
m4_cli_test(cli_run_start_position_past_context EXPECT_RC 1
  ARGS run --model ${M4_RUN_CASES}/long_positions/model --ids ${m4_long_row0} --start-position 245
  CHECKS "STDERR_1=--start-position 245: the prompt's 12 tokens would take positions 245\\.\\.256, past the model's max_position_embeddings \\(256: positions 0\\.\\.255\\)"
         "STDERR_2=at most 244 here")
m4_cli_test(cli_run_start_position_last_fit EXPECT_RC 0
  ARGS run --model ${M4_RUN_CASES}/long_positions/model --ids ${m4_long_row0} --start-position 244 --max-tokens 5
  CHECKS "STDERR_1=at most 1 new tokens fit in max_position_embeddings \\(256\\) after --start-position"
         "STDERR_2=generated 1 tokens")
m4_cli_test(cli_run_start_position_negative EXPECT_RC 2
  ARGS run --model ${M4_RUN_CASES}/long_positions/model --ids 1 --start-position -1
  CHECKS "STDERR_1=--start-position wants a whole number >= 0, got '-1'")
file(WRITE ${M4_RUN_TOK}/system_after_assistant.json [=[
[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
 {"role": "system", "content": "z"}, {"role": "user", "content": "w"}]
]=])
m4_cli_test(cli_run_chat_system_after_assistant EXPECT_RC 1
  ARGS run --model ${M4_RUN_TOK} --chat ${M4_RUN_TOK}/system_after_assistant.json
  CHECKS "STDERR_1=system_after_assistant.json: chat: message 2: Unexpected role 'system' after role 'assistant'")

# ---- tokenize ----------------------------------------------------------------------------------
# The Tekken tokenizer and the chat template from the command line; the expected ids are
# mistral-common's (tests/fixtures/tokenizer/corpus.json, tests/test_chat.c).
set(M4_TEKKEN ${PROJECT_SOURCE_DIR}/tests/fixtures/tokenizer/tekken_240911.json)
set(M4_TEKKEN_V15 ${PROJECT_SOURCE_DIR}/tests/fixtures/tokenizer/tekken_v15_synthetic.json)
m4_cli_test(cli_tokenize_help EXPECT_RC 0 ARGS tokenize --help
  CHECKS "STDOUT_1=Usage: mistral4 tokenize" "STDOUT_2=--decode \\[LIST...\\]" "STDOUT_3=JSON fields"
         "STDOUT_4=Exit status")
m4_cli_test(cli_help_lists_tokenize EXPECT_RC 0 ARGS --help CHECKS "STDOUT_1=\n  tokenize +text")
# corpus.json "cases"[1] and [9]: one line of ids per TEXT
m4_cli_test(cli_tokenize_text EXPECT_RC 0
  ARGS tokenize --tokenizer ${M4_TEKKEN} "The quick brown fox jumps over the lazy dog." "¿Dónde está la biblioteca? ¡Allí!"
  CHECKS "STDOUT_1=^1784 7586 22980 94137 72993 2136 1278 42757 10575 1046\n15870 1068 120394 7445 1427 62633 1063 25814 4668 1529 1033\n$")
m4_cli_test(cli_tokenize_json EXPECT_RC 0
  ARGS tokenize --tokenizer ${M4_TEKKEN} --json "The quick brown fox jumps over the lazy dog."
  CHECKS "JSON_1=input=text" "JSON_2=count=10" "JSON_3=ids.2=22980" "JSON_4=pieces.1= quick" "JSON_5=pieces.9=.")
# '--' ends the options: a TEXT may start with '-'
m4_cli_test(cli_tokenize_dash_text EXPECT_RC 0 ARGS tokenize --tokenizer ${M4_TEKKEN} --json -- --x
  CHECKS "JSON_1=pieces.0=--")
m4_cli_test(cli_tokenize_decode EXPECT_RC 0
  ARGS tokenize --tokenizer ${M4_TEKKEN} --decode "1784,7586 22980, 94137 72993,2136,1278,42757,10575,1046"
  CHECKS "STDOUT_1=^The quick brown fox jumps over the lazy dog.\n$")
# specials as their text by default, none with --skip-special; a split character is U+FFFD
m4_cli_test(cli_tokenize_decode_json EXPECT_RC 0
  ARGS tokenize --tokenizer ${M4_TEKKEN} --decode --json 1,3,22177,4
  CHECKS "JSON_1=text=<s>[INST]Hello[/INST]" "JSON_2=count=4" "JSON_3=pieces.1=[INST]" "JSON_4=input=ids")
m4_cli_test(cli_tokenize_decode_skip_special EXPECT_RC 0
  ARGS tokenize --tokenizer ${M4_TEKKEN} --decode --json --skip-special 1,3,22177,4 CHECKS "JSON_1=text=Hello")
m4_cli_test(cli_tokenize_decode_empty_item EXPECT_RC 1 ARGS tokenize --tokenizer ${M4_TEKKEN} --decode 1,,2
  CHECKS "STDERR_1=LIST 1: item 2 is empty \\(items are separated by commas or spaces\\)")
m4_cli_test(cli_tokenize_decode_trailing_comma EXPECT_RC 1 ARGS tokenize --tokenizer ${M4_TEKKEN} --decode 1,2,
  CHECKS "STDERR_1=LIST 1: item 3 is empty \\(items are separated by commas or spaces\\)")
m4_cli_test(cli_tokenize_decode_not_an_id EXPECT_RC 1 ARGS tokenize --tokenizer ${M4_TEKKEN} --decode 1,-2
  CHECKS "STDERR_1=LIST 1: '-2' is not a token id")
m4_cli_test(cli_tokenize_decode_out_of_range EXPECT_RC 1 ARGS tokenize --tokenizer ${M4_TEKKEN} --decode 131072
  CHECKS "STDERR_1=token id 131072 is out of range \\[0, 131072\\)")
# standard input → ids → text, through two commands
add_test(NAME cli_tokenize_pipe_roundtrip
  COMMAND sh -c "set -e; out=$(printf 'Hello, world!' | \"$0\" tokenize --tokenizer \"$1\" | \"$0\" tokenize --tokenizer \"$1\" --decode); echo \"$out\"; [ \"$out\" = 'Hello, world!' ]"
          $<TARGET_FILE:mistral4> ${M4_TEKKEN})
set_tests_properties(cli_tokenize_pipe_roundtrip PROPERTIES LABELS cpu TIMEOUT 60)
# m4_cli_stdin_failure(NAME FORMAT REGEX ARGS…): `printf FORMAT | mistral4 ARGS…` exits 1 and says REGEX
# (the exit status is printed before the output, since a PASS_REGULAR_EXPRESSION test ignores it)
function(m4_cli_stdin_failure name format regex)
  add_test(NAME ${name}
    COMMAND sh -c "f=$1; shift; out=$(printf \"$f\" | \"$0\" \"$@\" 2>&1); echo \"exit status $?: $out\""
            $<TARGET_FILE:mistral4> ${format} ${ARGN})
  set_tests_properties(${name} PROPERTIES LABELS cpu TIMEOUT 60 PASS_REGULAR_EXPRESSION "^exit status 1: .*${regex}")
endfunction()
m4_cli_stdin_failure(cli_tokenize_invalid_utf8 "ab\\377" "standard input: .*UTF-8.*byte 2" tokenize --tokenizer ${M4_TEKKEN})
m4_cli_stdin_failure(cli_tokenize_decode_nul "1,2\\0003" "standard input: a NUL byte at offset 3, where token ids were expected"
  tokenize --tokenizer ${M4_TEKKEN} --decode)
m4_cli_test(cli_tokenize_file_not_regular EXPECT_RC 1 ARGS tokenize --tokenizer ${M4_TEKKEN} --file ${CMAKE_CURRENT_BINARY_DIR}
  CHECKS "STDERR_1=tests: the text file is a folder, not a regular file")
# a FIFO is refused at once, not waited on (the loader's open, m4_file.h)
add_test(NAME cli_tokenize_file_fifo
  COMMAND sh -c "d=$(mktemp -d); mkfifo \"$d/f\"; out=$(timeout 20 \"$0\" tokenize --tokenizer \"$1\" --file \"$d/f\" 2>&1); echo \"exit status $?: $out\"; rm -rf \"$d\""
          $<TARGET_FILE:mistral4> ${M4_TEKKEN})
set_tests_properties(cli_tokenize_file_fifo PROPERTIES LABELS cpu TIMEOUT 60
  PASS_REGULAR_EXPRESSION "^exit status 1: .*the text file is a FIFO \\(named pipe\\), not a regular file")
# every corpus string: mistral-common's ids, and --decode gives it back byte for byte
if(M4_PYTHON3)
  add_test(NAME cli_tokenize_corpus_roundtrip
    COMMAND ${M4_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/tokenize_roundtrip.py $<TARGET_FILE:mistral4>
            ${PROJECT_SOURCE_DIR}/tests/fixtures/tokenizer/corpus.json)
  set_tests_properties(cli_tokenize_corpus_roundtrip PROPERTIES LABELS cpu TIMEOUT 300
    PASS_REGULAR_EXPRESSION "every string gives mistral-common's ids and decodes back to itself")
endif()

# the v15 template: test_chat's "one user message" and "thinking history" (mistral-common's ids),
# the second through a conversation file
m4_cli_test(cli_tokenize_prompt EXPECT_RC 0 ARGS tokenize --tokenizer ${M4_TEKKEN_V15} --prompt "Hello, world!"
  CHECKS "STDOUT_1=^1 37 223 134 373 388 363 402 195 201 709 549 1911 529 210 874 134 225 38 3 172 622 211 144 385 370 643 133 4\n$"
         "STDERR_1=29 tokens")
file(WRITE ${M4_RUN_TOK}/think.json [=[
[{"role": "user", "content": "Think first"},
 {"role": "assistant", "content": [{"type": "thinking", "thinking": "some thoughts"}, {"type": "text", "text": "answer"}]},
 {"role": "user", "content": "again"}]
]=])
m4_cli_test(cli_tokenize_chat EXPECT_RC 0
  ARGS tokenize --tokenizer ${M4_TEKKEN_V15} --chat ${M4_RUN_TOK}/think.json --reasoning high
  CHECKS "STDOUT_1=^1 37 223 134 373 388 363 402 195 201 709 549 1911 529 204 1327 134 225 38 3 1538 1177 1258 4 35 215 898 426 405 203 578 215 36 645 1543 2 3 493 593 4\n$")
m4_cli_test(cli_tokenize_chat_refused EXPECT_RC 1
  ARGS tokenize --tokenizer ${M4_TEKKEN_V15} --chat ${M4_RUN_TOK}/system_after_assistant.json
  CHECKS "STDERR_1=chat: message 2: Unexpected role 'system' after role 'assistant'")
m4_cli_test(cli_tokenize_chat_ends_with_assistant EXPECT_RC 1
  ARGS tokenize --tokenizer ${M4_TEKKEN_V15} --chat ${M4_RUN_TOK}/ends_with_assistant.json
  CHECKS "STDERR_1=Expected last role User or Tool \\(or Assistant with prefix\\) for serving but got assistant")
# An image's [IMG] layout: the fp8 case's config (patch 4, merge 2) beside the v15 tekken file;
# the 30x19 image is 3 rows x 4 cols of merged patches: 3 x ([IMG] x 4, [IMG_BREAK]), the last
# break [IMG_END], placed before the text.
set(M4_TOK_MM ${CMAKE_CURRENT_BINARY_DIR}/tokenize-multimodal)
file(MAKE_DIRECTORY ${M4_TOK_MM})
file(COPY_FILE ${M4_RUN_CASES}/fp8/model/config.json ${M4_TOK_MM}/config.json ONLY_IF_DIFFERENT)
file(COPY_FILE ${M4_TEKKEN_V15} ${M4_TOK_MM}/tekken.json ONLY_IF_DIFFERENT)
m4_cli_test(cli_tokenize_image EXPECT_RC 0
  ARGS tokenize --model ${M4_TOK_MM} --prompt x --image ${M4_RUN_CASES}/fp8/image0_rgb_30x19.png --json
  CHECKS "JSON_1=images.0.rows=3" "JSON_2=images.0.cols=4" "JSON_3=images.0.tokens=15" "JSON_4=images.0.start=20"
         "JSON_5=pieces.20=[IMG]" "JSON_6=pieces.24=[IMG_BREAK]" "JSON_7=pieces.34=[IMG_END]" "JSON_8=pieces.35=x"
         "JSON_9=count=37")
m4_cli_test(cli_tokenize_image_layout_text EXPECT_RC 0
  ARGS tokenize --model ${M4_TOK_MM} --prompt x --image ${M4_RUN_CASES}/fp8/image0_rgb_30x19.png
  CHECKS "STDOUT_1= 3 10 10 10 10 12 10 10 10 10 12 10 10 10 10 13 220 4\n$"
         "STDERR_1=image 1 \\(.*image0_rgb_30x19.png\\): 3 x 4 merged patches, 15 tokens from index 20")
m4_cli_test(cli_tokenize_image_without_config EXPECT_RC 1
  ARGS tokenize --tokenizer ${M4_TEKKEN_V15} --prompt x --image ${M4_RUN_CASES}/fp8/image0_rgb_30x19.png
  CHECKS "STDERR_1=images need the model's config.json")
m4_cli_test(cli_tokenize_no_tekken EXPECT_RC 1 ARGS tokenize --model ${M4_RUN_CASES}/text_tiny/model x
  CHECKS "STDERR_1=text_tiny/model/tekken.json not found")
# usage errors
m4_cli_test(cli_tokenize_no_tokenizer EXPECT_RC 2 ARGS tokenize x CHECKS "STDERR_1=give one of --model DIR and --tokenizer FILE")
m4_cli_test(cli_tokenize_two_inputs EXPECT_RC 2 ARGS tokenize --tokenizer ${M4_TEKKEN} x --prompt y
  CHECKS "STDERR_1=give one input")
m4_cli_test(cli_tokenize_raw_without_prompt EXPECT_RC 2 ARGS tokenize --tokenizer ${M4_TEKKEN} --raw x
  CHECKS "STDERR_1=--raw goes with --prompt")
m4_cli_test(cli_tokenize_decode_prompt EXPECT_RC 2 ARGS tokenize --tokenizer ${M4_TEKKEN} --decode --prompt x
  CHECKS "STDERR_1=--decode takes ids")
m4_cli_test(cli_tokenize_unknown_option EXPECT_RC 2 ARGS tokenize --tokenizer ${M4_TEKKEN} --frobnicate
  CHECKS "STDERR_1=unknown option '--frobnicate'")

# ---- conform --report / --junit to a path that cannot be written (issues #9, #18): refused before
# any row runs (nothing on stdout: no table, no summary), exit status 1, a message naming the option,
# the path and why, for both options, and nothing left behind. A missing folder for the JSON report,
# an existing folder as the JUnit path. (Permissions are not tested: CI may run as root.)
add_test(NAME cli_conform_report_unwritable
  COMMAND sh -c "d=$(mktemp -d); mkdir \"$d/adir\"; \"$0\" conform --case \"$1\" --quiet --report \"$d/missing/r.json\" --junit \"$d/adir\" >\"$d/out\" 2>\"$d/err\"; rc=$?; ok=1; [ $rc -eq 1 ] || { echo \"exit $rc, expected 1\"; ok=0; }; [ ! -s \"$d/out\" ] || { echo 'the rows ran:'; cat \"$d/out\"; ok=0; }; grep -q -- '--report .*missing/r.json: the folder .*missing does not exist' \"$d/err\" || { echo 'no JSON report message'; ok=0; }; grep -q -- '--junit .*adir: it is a folder' \"$d/err\" || { echo 'no JUnit report message'; ok=0; }; left=$(cd \"$d\" && find . -mindepth 1 ! -name err ! -name out ! -name adir); [ -z \"$left\" ] || { echo \"left behind: $left\"; ok=0; }; [ -z \"$(ls -A \"$d/adir\")\" ] || { echo 'written into adir'; ok=0; }; cat \"$d/err\"; rm -rf \"$d\"; [ $ok -eq 1 ]"
          $<TARGET_FILE:mistral4> ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny)
set_tests_properties(cli_conform_report_unwritable PROPERTIES LABELS cpu TIMEOUT 60)

# ---- preprocess --out goes through the same writer as the reports (m4_write_atomically,
# loader/m4_output.c): the file is complete, for both formats, nothing else is left in the folder,
# and its mode is 0666 less the umask, as for any file a program creates (mkstemp's 0600 was kept
# before issue #9, then a fixed 0644 until issue #18).
add_test(NAME cli_preprocess_out_mode
  COMMAND sh -c "d=$(mktemp -d); ok=1; for m in 022:644 027:640 002:664; do for f in p.h5 p.json; do (umask \"\${m%%:*}\" && \"$0\" preprocess \"$1\" --quiet --out \"$d/$f\") || ok=0; [ \"$(stat -c %a \"$d/$f\")\" = \"\${m#*:}\" ] || { echo \"umask \${m%%:*}: $f mode $(stat -c %a \"$d/$f\")\"; ok=0; }; done; [ \"$(ls -A \"$d\" | wc -l)\" -eq 2 ] || { ls -A \"$d\"; ok=0; }; rm -f \"$d\"/*; done; rm -rf \"$d\"; [ $ok -eq 1 ]"
          $<TARGET_FILE:mistral4> ${PROJECT_SOURCE_DIR}/golden/cases/fp8/image0_rgb_30x19.png)
set_tests_properties(cli_preprocess_out_mode PROPERTIES LABELS cpu TIMEOUT 60)

# ---- preprocess --out in a folder that does not exist: refused before any image is decoded
m4_cli_test(cli_preprocess_out_missing_folder EXPECT_RC 1
  ARGS preprocess ${PROJECT_SOURCE_DIR}/golden/cases/fp8/image0_rgb_30x19.png --out /nonexistent-dir/p.h5
  CHECKS "STDERR_1=^mistral4 preprocess: --out /nonexistent-dir/p.h5: the folder /nonexistent-dir does not exist\n$")

# ---- a full disk (issue #18): a 4 KiB tmpfs in a private user + mount namespace (`unshare -rm`;
# skipped, exit 77, where the kernel allows no user namespaces). Each output fails with the cause
# and how far it got, exit status 1, and nothing is left on the tmpfs: HDF5 and JSON
# `preprocess --out`, and the conformance JSON report.
add_test(NAME cli_output_full_disk
  COMMAND sh -c "unshare -rm true 2>/dev/null || exit 77; d=$(mktemp -d); unshare -rm sh -c 'mount -t tmpfs -o size=4k none \"$2\" && for f in p.h5 p.json; do \"$0\" preprocess \"$1\" --quiet --out \"$2/$f\"; echo \"rc=$?\"; done; \"$0\" conform --case \"$3\" --quiet --report \"$2/r.json\" >/dev/null; echo \"rc=$?\"; echo \"left: $(ls -A \"$2\")\"' \"$0\" \"$1\" \"$d\" \"$2\" >\"$d.out\" 2>&1; cat \"$d.out\"; ok=1; [ \"$(grep -c '^rc=1$' \"$d.out\")\" -eq 3 ] || ok=0; for f in p.h5 p.json; do grep -q \"$d/$f: cannot write the output: disk full (ENOSPC) after [0-9]* bytes: nothing written\" \"$d.out\" || ok=0; done; grep -q \"$d/r.json: cannot write the JSON report: disk full (ENOSPC) after [0-9]* bytes: nothing written\" \"$d.out\" || ok=0; grep -q '^left: $' \"$d.out\" || ok=0; rm -rf \"$d\" \"$d.out\"; [ $ok -eq 1 ]"
          $<TARGET_FILE:mistral4> ${PROJECT_SOURCE_DIR}/golden/cases/fp8/image0_rgb_30x19.png
          ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny)
set_tests_properties(cli_output_full_disk PROPERTIES LABELS cpu TIMEOUT 60 SKIP_RETURN_CODE 77)

# ---- bench: end-to-end generation timing (the reference on the tiny models) -------------------
m4_cli_test(cli_bench_help EXPECT_RC 0 ARGS bench --help
  CHECKS "STDOUT_1=Usage: mistral4 bench --model DIR" "STDOUT_2=--repeat N" "STDOUT_3=mistral4-bench/1"
         "STDOUT_4=Exit status")
# One table line per prompt length: length, the --gen tokens, then five figures.
m4_cli_test(cli_bench_table EXPECT_RC 0
  ARGS bench --model ${M4_RUN_CASES}/text_tiny/model --prompt 8,16 --gen 3 --repeat 2
  CHECKS "STDOUT_1=on ref \\(CPU\\), 3 new tokens per run, median of 2 after 1 warm-up"
         "STDOUT_2=prompt tok/s" "STDOUT_3=\n +8 +3 +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+\n"
         "STDOUT_4=\n +16 +3 +[0-9.]+")
# --gen 4 generates 4 tokens with 3 one-token steps (the last token is never forwarded), even on a
# model whose eos id may come up: end-of-sequence is ignored.
m4_cli_test(cli_bench_json EXPECT_RC 0
  ARGS bench --model ${M4_RUN_CASES}/fp8/model --prompt 5 --gen 4 --repeat 2 --warmup 0 --json
  CHECKS "JSON_1=schema=mistral4-bench/1" "JSON_2=backend=ref" "JSON_3=rows.0.prompt_tokens=5"
         "JSON_4=rows.0.new_tokens=4" "JSON_5=rows.0.decode_steps=3" "JSON_6=repeat=2" "JSON_7=device=CPU")
m4_cli_test(cli_bench_too_long EXPECT_RC 1
  ARGS bench --model ${M4_RUN_CASES}/text_tiny/model --prompt 8,250 --gen 8
  CHECKS "STDERR_1=a prompt of 250 tokens and 8 new ones need 257 positions, more than the model's max_position_embeddings \\(256\\)")
m4_cli_test(cli_bench_bad_length EXPECT_RC 2
  ARGS bench --model ${M4_RUN_CASES}/text_tiny/model --prompt 8,x CHECKS "STDERR_1=--prompt wants a whole number")
m4_cli_test(cli_bench_empty_length EXPECT_RC 2
  ARGS bench --model ${M4_RUN_CASES}/text_tiny/model --prompt 8,,16 CHECKS "STDERR_1=item 2 of '8,,16' is empty")
m4_cli_test(cli_bench_bad_repeat EXPECT_RC 2
  ARGS bench --model ${M4_RUN_CASES}/text_tiny/model --repeat 0 CHECKS "STDERR_1=--repeat wants a whole number in 1..1000")
m4_cli_test(cli_bench_no_model EXPECT_RC 2 ARGS bench --prompt 8 CHECKS "STDERR_1=missing --model")
m4_cli_test(cli_bench_bad_backend EXPECT_RC 2
  ARGS bench --model ${M4_RUN_CASES}/text_tiny/model --backend tpu CHECKS "STDERR_1=unknown backend 'tpu'")
m4_cli_test(cli_bench_out_unwritable EXPECT_RC 1
  ARGS bench --model ${M4_RUN_CASES}/text_tiny/model --prompt 4 --gen 2 --repeat 1 --out /nonexistent-dir/b.json
  CHECKS "STDERR_1=--out /nonexistent-dir/b.json: the folder /nonexistent-dir does not exist"
         "STDERR_2=^mistral4 bench: --out")  # refused before the model opens: nothing else on stderr
# --out writes the same JSON as --json prints: the file is read back by a second command
add_test(NAME cli_bench_out
  COMMAND sh -c "d=$(mktemp -d); \"$0\" bench --model \"$1\" --prompt 4 --gen 2 --repeat 1 --out \"$d/b.json\" >/dev/null 2>\"$d/err\" && grep -q 'wrote' \"$d/err\" && grep -q '\"schema\": \"mistral4-bench/1\"' \"$d/b.json\" && grep -q '\"prompt_tokens\": 4' \"$d/b.json\"; rc=$?; ls \"$d\" | grep -q tmp && rc=1; rm -rf \"$d\"; exit $rc"
          $<TARGET_FILE:mistral4> ${M4_RUN_CASES}/text_tiny/model)
set_tests_properties(cli_bench_out PROPERTIES LABELS cpu TIMEOUT 60)

# Issue #18, fault 8: every whole-number option goes through cli_parse_count, which refuses a '+'
# sign and leading spaces (strtoll took both: `--gpus +2`, `--longest-edge ' 64'` were accepted).
m4_cli_test(cli_inspect_gpus_plus_sign EXPECT_RC 2 ARGS inspect ${M4_FIXTURE} --gpus +2
  CHECKS "STDERR_1=--gpus wants a whole number in 1..1024, got '\\+2'")
m4_cli_test(cli_preprocess_size_leading_space EXPECT_RC 2
  ARGS preprocess ${PROJECT_SOURCE_DIR}/golden/cases/fp8/image0_rgb_30x19.png --longest-edge " 64"
  CHECKS "STDERR_1=--longest-edge wants a whole number in 1..65535, got ' 64'")
