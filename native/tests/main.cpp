#include <cstring>

#include "tests/check.h"

namespace w4a8test {
std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}
int currentFailures = 0;
}  // namespace w4a8test

// Usage: w4a8_native_tests [substring]   runs the tests whose name contains substring (all by default).
int main(int argc, char** argv) {
  int passed = 0, failed = 0;
  for (const auto& test : w4a8test::registry()) {
    if (argc > 1 && !std::strstr(test.name, argv[1])) continue;
    w4a8test::currentFailures = 0;
    test.body();
    const bool ok = w4a8test::currentFailures == 0;
    std::printf("%s %s\n", ok ? "  ok  " : "  FAIL", test.name);
    (ok ? passed : failed)++;
  }
  std::printf("native: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
