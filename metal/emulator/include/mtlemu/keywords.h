// MSL keywords that have no C++ meaning. Included last by metal_stdlib so the
// emulator's own headers and the C++ standard library never see them; .metal
// sources must not include C++ standard headers after <metal_stdlib>.
//
// Address spaces become clang address spaces: they type-check the way MSL
// does (a threadgroup pointer does not silently become a device pointer) and
// let the checked build find every device/threadgroup access in the IR.
#pragma once

#define device __attribute__((address_space(1)))
#define constant __attribute__((address_space(2)))
#define threadgroup __attribute__((address_space(3)))
#define threadgroup_imageblock __attribute__((address_space(3)))
#define thread
#define ray_data
#define object_data

#define METAL_FUNC inline __attribute__((always_inline))
#define METAL_INTERNAL
#define METAL_CONST constant
#define __HAVE_BFLOAT__ 1
#define __METAL_VERSION__ 310
#define __METAL__ 1
