// Exercises the C++ host API (mtlemu/launch.h) the way op code will use it.
#include <cstdio>
#include <cstring>
#include <vector>

#include "mtlemu/launch.h"

struct Params {
  unsigned n;
  float scale;
};

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  mtlemu::Module mod(argv[1]);
  for (const auto& k : mod.kernels()) std::printf("kernel %s\n", k.c_str());
  std::vector<float> x(256), y(256, 1.0f);
  for (int i = 0; i < 256; ++i) x[i] = float(i);
  Params p{256, 2.0f};
  mod.launch("saxpy", {4, 1, 1}, {64, 1, 1},
             {mtlemu::Buffer::of(x), mtlemu::Buffer::of(y), mtlemu::Buffer::of_value(p)});
  for (int i = 0; i < 256; ++i)
    if (y[i] != 2.0f * i + 1.0f) {
      std::printf("mismatch at %d\n", i);
      return 1;
    }
  std::printf("saxpy ok\n");
  try {
    p.n = 300;  // reads past the end of x
    mod.launch("saxpy", {5, 1, 1}, {64, 1, 1},
               {mtlemu::Buffer::of(x), mtlemu::Buffer::of(y), mtlemu::Buffer::of_value(p)});
    std::printf("no error\n");
  } catch (const mtlemu::Error& e) {
    std::printf("caught: %s", e.what());
  }
  return 0;
}
