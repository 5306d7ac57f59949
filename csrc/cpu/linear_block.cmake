# Sources of the linear_block kernel family (portable + per-ISA translation units); included by csrc/cpu/CMakeLists.txt.
