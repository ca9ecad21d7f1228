// The one exception type used inside libsamfast; the C layer (capi.cpp) turns it into a status
// code and the thread's last-error message. Nothing throws across the C ABI.
#pragma once

#include <stdexcept>
#include <string>

#include "samfast.h"

namespace samfast {

class Error : public std::runtime_error {
 public:
  Error(samfast_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  samfast_status status() const noexcept { return status_; }

 private:
  samfast_status status_;
};

[[noreturn]] inline void fail(samfast_status status, const std::string& message) { throw Error(status, message); }

}  // namespace samfast
