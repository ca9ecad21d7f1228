// One opened export folder: manifest, backend, the current slice and the cache of recent slices.
// The preprocessing and postprocessing here mirror samfast/runtime/predictor.py and
// samfast/preprocess.py step by step, in plain C++ (imaging.cpp).
#pragma once

#include <list>
#include <memory>
#include <string>
#include <utility>

#include "backend.hpp"
#include "manifest.hpp"
#include "samfast.h"

namespace samfast {

struct OpenOptions {
  std::string backend, device, precision;  // "" = from the set
  int cache_slices = 0;                    // 0 = SAMFAST_DEFAULT_CACHE_SLICES
  int threads = 0;
};

class Model {
 public:
  Model(const std::string& export_dir, const OpenOptions& options);
  void set_slice(const float* pixels, int height, int width, int channels, double spacing_y, double spacing_x);
  void predict(const samfast_prompt& prompt, samfast_output& out);
  void info(samfast_info& out) const;
  void slice(int* height, int* width, double* spacing_y, double* spacing_x) const;

 private:
  std::vector<float> prepare(const float* pixels, int64_t height, int64_t width, int channels,
                             int64_t new_height, int64_t new_width) const;

  Manifest manifest_;
  std::unique_ptr<Backend> backend_;
  int cache_slices_ = 1;
  // Most recent first: (SHA-256 of size, channels and pixels, encoded slice).
  std::list<std::pair<std::string, std::shared_ptr<const SliceState>>> cache_;
  std::shared_ptr<const SliceState> current_;
  int64_t height_ = 0, width_ = 0;          // the slice as given
  int64_t new_height_ = 0, new_width_ = 0;  // after resize_longest_side
  double spacing_y_ = 0, spacing_x_ = 0;
};

// The process-wide thread count samfast_set_num_threads set (0: never set).
int default_threads();
void set_default_threads(int n);

}  // namespace samfast
