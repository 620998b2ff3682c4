// Memory-mapped model files: mapFile(path) -> ArrayBuffer over a read-only mapping of the whole file.
//
// The ArrayBuffer is external: its bytes are the pages of the file (no copy, loaded on first touch),
// and its finalizer munmaps when the last JS reference goes. The mapping is PROT_READ: lib/ only
// ever reads through views of it (a write would fault). Where the runtime refuses external buffers
// (a V8 sandbox), the file is copied into an ordinary ArrayBuffer instead.
// Errors: E_IO when a system call fails (message names the path and errno text), E_FILE when the
// path is not a regular file.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "addon/bindings.h"

namespace w4a8::addon {
namespace {

constexpr const char* kIo = "E_IO";      // open / fstat / mmap failed
constexpr const char* kFile = "E_FILE";  // not a regular file

struct Mapping {
  void* address;
  size_t length;
};

void unmap(napi_env, void*, void* hint) {
  Mapping* mapping = static_cast<Mapping*>(hint);
  munmap(mapping->address, mapping->length);
  delete mapping;
}

[[noreturn]] void failErrno(Napi::Env env, const char* call, const std::string& path) {
  fail(env, kIo, std::string(call) + " '" + path + "' failed: " + std::strerror(errno));
}

// An ordinary (copied) ArrayBuffer with the mapping's bytes; unmaps the mapping.
Napi::Value copyOut(Napi::Env env, Mapping* mapping) {
  Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, mapping->length);
  std::memcpy(copy.Data(), mapping->address, mapping->length);
  unmap(env, nullptr, mapping);
  return copy;
}

// (path: string) -> ArrayBuffer of the file's bytes, mapped read-only.
Napi::Value mapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) fail(env, codes::kType, "path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  // O_NONBLOCK: a FIFO (or device) given as a model opens at once and is refused below, instead of blocking
  // until a writer appears; for a regular file the flag changes nothing.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) failErrno(env, "open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int saved = errno;
    close(fd);
    errno = saved;
    failErrno(env, "fstat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    fail(env, kFile, "'" + path + "' is not a regular file");
  }
  const size_t length = (size_t)st.st_size;
  if (length == 0) {  // mmap refuses zero-length mappings; an empty file is an empty buffer
    close(fd);
    return Napi::ArrayBuffer::New(env, 0);
  }
  void* address = mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
  const int mmapErrno = errno;
  close(fd);  // the mapping keeps the file open
  if (address == MAP_FAILED) {
    errno = mmapErrno;
    failErrno(env, "mmap", path);
  }
  Mapping* mapping = new Mapping{address, length};
  napi_value buffer;
  const napi_status status = napi_create_external_arraybuffer(env, address, length, unmap, mapping, &buffer);
  if (status == napi_ok) return Napi::Value(env, buffer);
  // External buffers refused (napi_no_external_buffers_allowed): clear any pending error, then copy.
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
  return copyOut(env, mapping);
}

}  // namespace

void registerFile(Napi::Env env, Napi::Object exports) {
  exports.Set("mapFile", Napi::Function::New(env, mapFile));
}

}  // namespace w4a8::addon
