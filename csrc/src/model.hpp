// One opened export folder: manifest, backend, and the current slice. The preprocessing and
// postprocessing here mirror samfast/runtime/predictor.py and samfast/preprocess.py step by step.
#pragma once

#include <memory>
#include <string>

#include "backend.hpp"
#include "manifest.hpp"
#include "samfast.h"

namespace samfast {

// (height, width) once the longest side is scaled to `target` (ResizeLongestSide.get_preprocess_shape).
std::pair<int64_t, int64_t> preprocess_shape(int64_t height, int64_t width, int64_t target);

class Model {
 public:
  Model(const std::string& export_dir, const char* device);
  void set_slice(const float* pixels, int height, int width, int channels, double spacing_y, double spacing_x);
  void predict(const samfast_prompt& prompt, samfast_output& out);
  void info(samfast_info& out) const;
  void slice(int* height, int* width, double* spacing_y, double* spacing_x) const;

 private:
  Manifest manifest_;
  std::unique_ptr<Backend> backend_;
  bool has_slice_ = false;
  int64_t height_ = 0, width_ = 0;          // the slice as given
  int64_t new_height_ = 0, new_width_ = 0;  // after resize_longest_side
  double spacing_y_ = 0, spacing_x_ = 0;
};

}  // namespace samfast
