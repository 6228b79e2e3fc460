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
  if(NOT "${rc}" STREQUAL "${EXPECT_RC}")
    message(FATAL_ERROR "exit status ${rc}, expected ${EXPECT_RC}\n${shown}")
  endif()
  foreach(i RANGE 1 9)
    if(DEFINED STDOUT_${i} AND NOT out MATCHES "${STDOUT_${i}}")
      message(FATAL_ERROR "stdout does not match '${STDOUT_${i}}'\n${shown}")
    endif()
    if(DEFINED STDERR_${i} AND NOT err MATCHES "${STDERR_${i}}")
      message(FATAL_ERROR "stderr does not match '${STDERR_${i}}'\n${shown}")
    endif()
    if(DEFINED JSON_${i})
      string(REGEX MATCH "^([^=]+)=(.*)$" pair "${JSON_${i}}")
      set(want "${CMAKE_MATCH_2}")
      string(REPLACE "." ";" keys "${CMAKE_MATCH_1}")
      string(JSON got ERROR_VARIABLE json_error GET "${out}" ${keys})
      if(json_error)
        message(FATAL_ERROR "JSON: ${json_error}\n${shown}")
      endif()
      if(NOT "${got}" STREQUAL "${want}")
        message(FATAL_ERROR "JSON ${CMAKE_MATCH_1} = ${got}, expected ${want}")
      endif()
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
  CHECKS "STDERR_1=/nonexistent.h5: missing or not an HDF5 file")
m4_cli_test(cli_conform_wrong_weights EXPECT_RC 1 ARGS conform --model ${PROJECT_SOURCE_DIR}/golden/cases/routing_variants/model --golden ${M4_TINY_CASE}/text_tiny.h5 --quiet
  CHECKS "STDOUT_1=first divergence: text.embed_tokens")
m4_cli_test(cli_conform_usage EXPECT_RC 2 ARGS conform --backend nope --case ${M4_TINY_CASE}
  CHECKS "STDERR_1=unknown backend")
m4_cli_test(cli_conform_help EXPECT_RC 0 ARGS conform --help CHECKS "STDOUT_1=teacher-forced")

# The reports validate: JSON through python's parser, JUnit through xmllint (libxml2-utils).
find_program(XMLLINT xmllint)
find_package(Python3 COMPONENTS Interpreter)
if(XMLLINT AND Python3_Interpreter_FOUND)
  add_test(NAME cli_conform_reports_validate
    COMMAND sh -c "set -e; d=$(mktemp -d); \"$<TARGET_FILE:mistral4>\" conform --case ${M4_TINY_CASE} --quiet --report $d/r.json --junit $d/r.xml; \"${Python3_EXECUTABLE}\" -m json.tool $d/r.json >/dev/null; \"${XMLLINT}\" --noout $d/r.xml; test \"$(\"${XMLLINT}\" --xpath 'count(//testcase)' $d/r.xml)\" -gt 30; rm -rf $d")
  set_tests_properties(cli_conform_reports_validate PROPERTIES LABELS cpu TIMEOUT 60)
endif()
