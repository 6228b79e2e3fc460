# check_run.cmake — what the script-mode command tests (cli_tests.cmake, candidate_tests.cmake)
# check of one run, given -DEXPECT_RC=n and optional -DSTDOUT_1..9 / -DSTDERR_1..9 (regular
# expressions that must match).

# The run's exit status and output; `shown` is printed with any failure.
function(m4_check_run rc out err shown)
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
  endforeach()
endfunction()

# `spec` is "key.key.key=value": the JSON document `text` must hold that value there.
function(m4_check_json text spec what shown)
  string(REGEX MATCH "^([^=]+)=(.*)$" pair "${spec}")
  set(want "${CMAKE_MATCH_2}")
  set(path "${CMAKE_MATCH_1}")
  string(REPLACE "." ";" keys "${path}")
  string(JSON got ERROR_VARIABLE json_error GET "${text}" ${keys})
  if(json_error)
    message(FATAL_ERROR "${what}: ${json_error}\n${shown}")
  endif()
  if(NOT "${got}" STREQUAL "${want}")
    message(FATAL_ERROR "${what} ${path} = ${got}, expected ${want}\n${shown}")
  endif()
endfunction()
