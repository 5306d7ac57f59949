# Sources of the exit_gate kernel family (portable + per-ISA translation units); included by csrc/cpu/CMakeLists.txt.
