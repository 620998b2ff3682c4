#include <functional>

#include "model/ops.h"

namespace w4a8 {

// Serial until the kernel thread pool lands.
void parallelFor(int count, const std::function<void(int, int)>& fn) {
  if (count > 0) fn(0, count);
}

}  // namespace w4a8
