# Sources of the qlinear_a8 kernel family (portable + per-ISA translation units); included by csrc/cpu/CMakeLists.txt.
target_sources(tc_cpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/qlinear_a8.cpp ${CMAKE_CURRENT_LIST_DIR}/qlinear_a8_scalar.cpp)
if(TC_X86)
  target_sources(tc_cpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/qlinear_a8_avx2.cpp)
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/qlinear_a8_avx2.cpp PROPERTIES COMPILE_OPTIONS "${TC_AVX2_FLAGS}")
  # vpdpbusd: only called when the CPU reports AVX512_VNNI (qlinear_a8.cpp).
  target_sources(tc_cpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/qlinear_a8_avx512vnni.cpp)
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/qlinear_a8_avx512vnni.cpp PROPERTIES COMPILE_OPTIONS "${TC_AVX512_FLAGS};-mavx512vnni")
endif()
