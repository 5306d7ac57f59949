# Sources of the quant kernel family (portable + per-ISA translation units); included by csrc/cpu/CMakeLists.txt.
