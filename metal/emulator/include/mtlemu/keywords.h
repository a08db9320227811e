// MSL keywords that have no C++ meaning. Included last by metal_stdlib so the
// emulator's own headers and the C++ standard library never see them; .metal
// sources must not include C++ standard headers after <metal_stdlib>.
//
// Address spaces vanish. (clang address_space attributes would type-check
// like MSL, but C++ cannot copy a struct into or out of a non-default
// address space, which MSL code does all the time.) Which memory an access
// touches is decided at run time from the address instead (see rt.h).
// `constant` keeps its read-only meaning as `const` (MSL code also writes
// `const constant`; the duplicate is only a warning, silenced by build.py).
#pragma once

#define device
#define constant const
#define threadgroup
#define threadgroup_imageblock
#define thread
#define restrict __restrict
#define ray_data
#define object_data

#define METAL_FUNC inline __attribute__((always_inline))
#define METAL_INTERNAL
#define METAL_CONST constant
#define __HAVE_BFLOAT__ 1
#define __METAL_VERSION__ 310
#define __METAL__ 1
