# Sources of the exit_gate kernel family (portable + per-ISA translation units); included by csrc/cpu/CMakeLists.txt.
target_sources(tc_cpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/exit_gate.cpp ${CMAKE_CURRENT_LIST_DIR}/exit_gate_scalar.cpp)
if(TC_X86)
  target_sources(tc_cpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/exit_gate_avx2.cpp ${CMAKE_CURRENT_LIST_DIR}/exit_gate_avx512.cpp)
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/exit_gate_avx2.cpp PROPERTIES COMPILE_OPTIONS "${TC_AVX2_FLAGS}")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/exit_gate_avx512.cpp PROPERTIES COMPILE_OPTIONS "${TC_AVX512_FLAGS}")
endif()
