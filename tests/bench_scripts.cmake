# Tests of the benchmark scripts (scripts/bench-compare, scripts/plot-bench) on crafted result
# files in tests/fixtures/bench; the driver is tests/bench_scripts_test.py. Included from
# tests/CMakeLists.txt. They need a Python 3 interpreter (standard library only); plot-bench also
# needs matplotlib: the first of the found interpreter and /usr/bin/python3 that imports it runs
# that test, else it reports skipped (exit 77). No benchmark is ever run or timed here.
find_package(Python3 COMPONENTS Interpreter QUIET)
if(NOT Python3_Interpreter_FOUND)
  message(STATUS "mistral4: no python3; the bench-compare / plot-bench tests are not registered")
  return()
endif()

add_test(NAME bench_compare
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/bench_scripts_test.py compare)

set(m4_plot_python ${Python3_EXECUTABLE})
foreach(candidate ${Python3_EXECUTABLE} /usr/bin/python3)
  if(EXISTS ${candidate})
    execute_process(COMMAND ${candidate} -c "import matplotlib"
                    RESULT_VARIABLE m4_has_matplotlib OUTPUT_QUIET ERROR_QUIET)
    if(m4_has_matplotlib EQUAL 0)
      set(m4_plot_python ${candidate})
      break()
    endif()
  endif()
endforeach()
add_test(NAME plot_bench
         COMMAND ${m4_plot_python} ${CMAKE_CURRENT_SOURCE_DIR}/bench_scripts_test.py plot)
set_tests_properties(bench_compare plot_bench PROPERTIES LABELS cpu TIMEOUT 120
                     ENVIRONMENT "MPLBACKEND=Agg")
set_tests_properties(plot_bench PROPERTIES SKIP_RETURN_CODE 77)

# scripts/gpu-check and scripts/gpu-bundle --check rehearsed without a GPU: a fake bundle acts out
# a run with a planted bug in one fast path (tests/gpu_check_rehearsal.py).
add_test(NAME gpu_check_rehearsal COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/gpu_check_rehearsal.py)
set_tests_properties(gpu_check_rehearsal PROPERTIES LABELS cpu TIMEOUT 600)

# One name per component: the GPU and CPU benchmark rows spell components as the report does.
if(TARGET mistral4)
  add_test(NAME one_name COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/one_name_test.py
           $<TARGET_FILE:mistral4> ${PROJECT_SOURCE_DIR})
  set_tests_properties(one_name PROPERTIES LABELS cpu TIMEOUT 60)
endif()
