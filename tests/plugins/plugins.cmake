# Plugin backends (include/mistral4/plugin.h, docs/PLUGINS.md) under `mistral4 conform --backend
# plugin:…` (included from tests/CMakeLists.txt after cli_tests.cmake, whose m4_cli_test it uses):
#  - m4_plugin_ref: the reference through the ABI, must pass every golden case;
#  - m4_plugin_ref_bug: the same with one planted bug, must be named as the first divergence;
#  - m4_plugin_outside: tests/outside_plugin/ (two components, header only) built in the tree;
#  - m4_plugin_bad_*: plugins the harness must refuse with a message and exit status 1.

# The reference plugin links the backend room's static libraries into a shared object.
set_target_properties(m4_backend m4_reference m4_loader PROPERTIES POSITION_INDEPENDENT_CODE ON)

# m4_plugin(NAME SOURCE [DEFINES d…] [LIBRARIES l…]): a plugin shared object NAME.so.
function(m4_plugin name source)
  cmake_parse_arguments(P "" "" "DEFINES;LIBRARIES" ${ARGN})
  add_library(${name} MODULE ${source})
  target_link_libraries(${name} PRIVATE m4_plugin_api ${P_LIBRARIES})
  target_compile_definitions(${name} PRIVATE ${P_DEFINES})
  # keep the libraries linked in to the plugin: only m4_plugin_get_info is its interface
  target_link_options(${name} PRIVATE -Wl,--exclude-libs,ALL)
  set_target_properties(${name} PROPERTIES PREFIX "" C_VISIBILITY_PRESET hidden)
endfunction()

set(dir ${CMAKE_CURRENT_SOURCE_DIR}/plugins)
m4_plugin(m4_plugin_ref ${dir}/reference_plugin.c LIBRARIES m4_backend)
m4_plugin(m4_plugin_ref_bug ${dir}/reference_plugin.c DEFINES PLANTED_BUG LIBRARIES m4_backend)
m4_plugin(m4_plugin_outside ${CMAKE_CURRENT_SOURCE_DIR}/outside_plugin/outside_plugin.c LIBRARIES m)
foreach(defect NO_ENTRY ABI MISSING_CALL DEVICE_BUFFERS INIT INIT_CRASH CALL_CRASH ENTRY_CRASH)
  string(TOLOWER ${defect} lower)
  m4_plugin(m4_plugin_bad_${lower} ${dir}/bad_plugin.c DEFINES DEFECT_${defect})
endforeach()

# ---- the reference through the ABI: every row of every golden case passes, none is skipped
foreach(case text_tiny fp8 long_positions multimodal routing_variants)
  m4_cli_test(plugin_ref_${case} EXPECT_RC 0
    ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_ref> --case ${PROJECT_SOURCE_DIR}/golden/cases/${case} --quiet
    CHECKS "STDOUT_1=^plugin:ref on ${case}: [1-9][0-9]* passed, 0 failed, 0 errors, 0 not implemented")
endforeach()

# ---- the planted bug (post_attention_layernorm's epsilon): its two rows (text_tiny has two
# layers) fail, nothing else, and the first divergence names it
m4_cli_test(plugin_planted_bug EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_ref_bug> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny --quiet
  CHECKS "STDOUT_1=^plugin:ref-bug on text_tiny: 36 passed, 2 failed, 0 errors, 0 not implemented"
         "STDOUT_2=first divergence: text.layers.0.post_attention_layernorm\n")
m4_cli_test(plugin_planted_bug_table EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_ref_bug> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDOUT_1=text.layers.1.post_attention_layernorm[^\n]*FAIL" "STDOUT_2=text.layers.1 [^\n]*PASS")

# ---- a plugin with two components: those pass, the rest are reported, the exit status is 0
m4_cli_test(plugin_partial EXPECT_RC 0
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_outside> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny --quiet
  CHECKS "STDOUT_1=^plugin:outside on text_tiny: 6 passed, 0 failed, 0 errors, 32 not implemented")

# ---- plugins the harness refuses: exit status 1 and a message naming the file and the problem
m4_cli_test(plugin_missing_file EXPECT_RC 1
  ARGS conform --backend plugin:/nonexistent/plugin.so --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDERR_1=/nonexistent/plugin.so: cannot load the plugin: .*No such file")
m4_cli_test(plugin_not_shared_object EXPECT_RC 1
  ARGS conform --backend plugin:${dir}/bad_plugin.c --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDERR_1=bad_plugin.c: cannot load the plugin: ")
m4_cli_test(plugin_no_entry EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_bad_no_entry> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDERR_1=m4_plugin_bad_no_entry.so: not a mistral4 plugin: no symbol m4_plugin_get_info")
m4_cli_test(plugin_wrong_abi EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_bad_abi> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDERR_1=m4_plugin_bad_abi.so: the plugin was built for plugin ABI 2, this mistral4 has ABI 1")
m4_cli_test(plugin_missing_call EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_bad_missing_call> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDERR_1=m4_plugin_bad_missing_call.so: plugin bad declares router but its router function is NULL")
m4_cli_test(plugin_device_buffers EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_bad_device_buffers> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDERR_1=m4_plugin_bad_device_buffers.so: plugin bad: buffers 1: ABI 1 has host buffers only")
m4_cli_test(plugin_init_fails EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_bad_init> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDERR_1=m4_plugin_bad_init.so: plugin bad: init failed: no GPU found \\(planted init failure\\)")

# ---- the install, used from outside: a fresh prefix, tests/outside_plugin built with
# find_package and with pkg-config, each run under the installed command
add_test(NAME install_outside_plugin
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/outside_plugin/install_test.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(install_outside_plugin PROPERTIES LABELS cpu TIMEOUT 300)

# ---- a plugin that crashes: the signal ends the call, not the harness
m4_cli_test(plugin_entry_crashes EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_bad_entry_crash> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDERR_1=m4_plugin_bad_entry_crash.so: the plugin crashed in m4_plugin_get_info")
m4_cli_test(plugin_init_crashes EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_bad_init_crash> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDERR_1=m4_plugin_bad_init_crash.so: plugin bad crashed in init \\(signal 11, Segmentation fault\\)")
m4_cli_test(plugin_call_crashes EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_bad_call_crash> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny --quiet
  CHECKS "STDOUT_1=^plugin:bad on text_tiny: 0 passed, 0 failed, 1 errors, 37 not implemented")
m4_cli_test(plugin_call_crash_row EXPECT_RC 1
  ARGS conform --backend plugin:$<TARGET_FILE:m4_plugin_bad_call_crash> --case ${PROJECT_SOURCE_DIR}/golden/cases/text_tiny
  CHECKS "STDOUT_1=text.embed_tokens [^\n]*ERROR +\\(backend: [^\n]*plugin bad crashed in embed_tokens \\(signal 11")
