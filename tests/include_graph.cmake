# The rooms depend on each other one way only (scripts/check-includes; docs/ARCHITECTURE.md,
# "Layout"): include_graph checks the source tree, include_graph_self_test plants bad includes in a
# temporary copy and checks that each is caught. Included from tests/CMakeLists.txt; CPU only.
find_package(Python3 COMPONENTS Interpreter QUIET)
if(NOT Python3_Interpreter_FOUND)
  message(STATUS "mistral4: no python3; the include_graph tests are not registered")
  return()
endif()
add_test(NAME include_graph COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/scripts/check-includes
                                    --root ${PROJECT_SOURCE_DIR})
add_test(NAME include_graph_self_test
         COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/scripts/check-includes --self-test)
set_tests_properties(include_graph include_graph_self_test PROPERTIES LABELS cpu TIMEOUT 120)
