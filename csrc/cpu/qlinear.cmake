# Sources of the qlinear kernel family (portable + per-ISA translation units); included by csrc/cpu/CMakeLists.txt.
target_sources(tc_cpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/qlinear.cpp ${CMAKE_CURRENT_LIST_DIR}/qlinear_scalar.cpp)
if(TC_X86)
  target_sources(tc_cpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/qlinear_avx2.cpp ${CMAKE_CURRENT_LIST_DIR}/qlinear_avx512.cpp)
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/qlinear_avx2.cpp PROPERTIES COMPILE_OPTIONS "${TC_AVX2_FLAGS}")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/qlinear_avx512.cpp PROPERTIES COMPILE_OPTIONS "${TC_AVX512_FLAGS}")
  # vdpbf16ps GEMM for bf16 x: only called when the CPU reports AVX512_BF16 (qlinear.cpp).
  target_sources(tc_cpu PRIVATE ${CMAKE_CURRENT_LIST_DIR}/qlinear_avx512_bf16.cpp)
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/qlinear_avx512_bf16.cpp PROPERTIES COMPILE_OPTIONS "${TC_AVX512_FLAGS};-mavx512bf16")
endif()
