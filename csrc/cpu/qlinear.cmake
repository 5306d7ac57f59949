# Sources of the qlinear kernel family (portable + per-ISA translation units); included by csrc/cpu/CMakeLists.txt.
