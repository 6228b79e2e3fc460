# `cmake --install`: the command, the plugin ABI's public header, the bundled golden cases, and what lets an outside project
# find them the usual way: a CMake package (find_package(mistral4): mistral4::plugin, an INTERFACE
# target with the include folder, and mistral4::mistral4, the command) and a pkg-config file
# (mistral4.pc). Both are relocatable: the prefix given to `cmake --install --prefix` works.
# A plugin needs no library of ours: the ABI is the header (docs/PLUGINS.md).
include(CMakePackageConfigHelpers)

set_target_properties(mistral4 PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
install(TARGETS mistral4 EXPORT mistral4Targets RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS m4_plugin_api EXPORT mistral4Targets)
install(FILES ${PROJECT_SOURCE_DIR}/include/mistral4/plugin.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mistral4)
# the bundled golden cases (14 MB), where an installed `mistral4 conform --help` finds and lists them
install(DIRECTORY ${PROJECT_SOURCE_DIR}/golden/cases/ DESTINATION ${CMAKE_INSTALL_DATADIR}/mistral4/cases)

set(m4_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/mistral4)
install(EXPORT mistral4Targets NAMESPACE mistral4:: DESTINATION ${m4_cmake_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/mistral4Config.cmake.in
  ${PROJECT_BINARY_DIR}/mistral4Config.cmake INSTALL_DESTINATION ${m4_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/mistral4ConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/mistral4Config.cmake ${PROJECT_BINARY_DIR}/mistral4ConfigVersion.cmake
  DESTINATION ${m4_cmake_dir})

configure_file(${PROJECT_SOURCE_DIR}/cmake/mistral4.pc.in ${PROJECT_BINARY_DIR}/mistral4.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/mistral4.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
