#include <functional>

#include "model/ops.h"
#include "runtime/thread_pool.h"

namespace w4a8 {

void parallelFor(int count, const std::function<void(int, int)>& fn) {
  if (count > 0) globalThreadPool().parallelFor(count, 1, [&](int begin, int end) { fn(begin, end); });
}

}  // namespace w4a8
