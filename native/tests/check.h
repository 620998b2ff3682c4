// A minimal test harness for the native unit tests: TEST(name) registers a function, CHECK records
// failures with file:line, and main() prints one line per test and "native: N passed, N failed".
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace w4a8test {

struct TestCase {
  const char* name;
  std::function<void()> body;
};
std::vector<TestCase>& registry();
extern int currentFailures;

struct Registrar {
  Registrar(const char* name, std::function<void()> body) { registry().push_back({name, std::move(body)}); }
};

// Seeded generator (splitmix64) so failures are reproducible; the seed is printed with each test.
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next() >> 40) * (1.0 / 16777216.0)); }
  int below(int n) { return (int)(next() % (uint64_t)n); }
};

}  // namespace w4a8test

#define W4A8_CONCAT2(a, b) a##b
#define W4A8_CONCAT(a, b) W4A8_CONCAT2(a, b)
#define TEST(name)                                                                          \
  static void name();                                                                       \
  static w4a8test::Registrar W4A8_CONCAT(registrar_, name)(#name, name);                    \
  static void name()

#define CHECK(cond, ...)                                                                    \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      if (++w4a8test::currentFailures <= 10) {                                              \
        std::fprintf(stderr, "  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);     \
        std::fprintf(stderr, __VA_ARGS__);                                                  \
        std::fprintf(stderr, "\n");                                                         \
      }                                                                                     \
    }                                                                                       \
  } while (0)
