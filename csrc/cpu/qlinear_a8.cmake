# Sources of the qlinear_a8 kernel family (portable + per-ISA translation units); included by csrc/cpu/CMakeLists.txt.
