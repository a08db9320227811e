#include "steel/scale.h"

template [[host_name("scale4_f16")]] [[kernel]] decltype(scale4<half>) scale4<half>;
