// Qualifiers for the headers shared by C++, CUDA and Metal (real Metal and the CPU
// emulator).  MSL requires program-scope variables to live in the `constant` address
// space, so namespace-scope constants are declared MARLIN_CONST.
#pragma once

#if defined(__METAL_VERSION__)
#define MARLIN_CONST constant constexpr
#else
#define MARLIN_CONST constexpr
#endif
