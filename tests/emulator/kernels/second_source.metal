#include "steel/scale.h"

template [[host_name("scale4_f32")]] [[kernel]] decltype(scale4<float>) scale4<float>;
