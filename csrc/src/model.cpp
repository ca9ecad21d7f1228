#include "model.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "error.hpp"
#include "imaging.hpp"
#include "plugin.hpp"
#include "sha256.hpp"

namespace samfast {
namespace {

// samfast.models.registry._SAM_MEAN / _SAM_STD: "imagenet" normalisation on a 0..255 slice.
constexpr float kPixelMean[3] = {123.675f, 116.28f, 103.53f};
constexpr float kPixelStd[3] = {58.395f, 57.12f, 57.375f};
constexpr int64_t kMaxSide = 1 << 15;
constexpr int kMaxPoints = 4096;
constexpr int kMaxCacheSlices = 1024;

std::atomic<int> process_threads{0};

std::string size_text(int64_t width, int64_t height) {
  return std::to_string(width) + "x" + std::to_string(height);
}

std::string xy_text(double x, double y) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "(%g, %g)", x, y);
  return buffer;
}

bool valid_device(const std::string& d) {
  if (d == "cpu" || d == "cuda") return true;
  if (d.rfind("cuda:", 0) != 0 || d.size() == 5 || d.size() > 8) return false;
  return std::all_of(d.begin() + 5, d.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void copy_text(char* dst, size_t capacity, const std::string& src) {
  size_t n = std::min(capacity - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

// segment-anything's ResizeLongestSide.apply_coords: scaled in float64, then stored as float32.
float scale_coord(float value, int64_t new_side, int64_t old_side) {
  return static_cast<float>(static_cast<double>(value) * (static_cast<double>(new_side) / static_cast<double>(old_side)));
}

// The backend each format runs on (samfast.backends.BACKEND_FORMATS, seen from C).
std::string backend_for(const std::string& format) {
  if (format == "onnx") return "openvino";
  if (format == "torchscript") return "libtorch";
  return "tensorrt";
}

}  // namespace

int default_threads() { return process_threads.load(); }
void set_default_threads(int n) {
  process_threads.store(n);
  plugin_set_threads(n);
}

Model::Model(const std::string& export_dir, const OpenOptions& options) {
  const std::string& asked = options.backend;
  if (!asked.empty() && asked != "openvino" && asked != "libtorch" && asked != "tensorrt")
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "backend \"" + asked + "\" unknown; use openvino, libtorch or tensorrt");
  if (options.cache_slices < 0 || options.cache_slices > kMaxCacheSlices)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "cache_slices must be between 1 and " + std::to_string(kMaxCacheSlices) +
                                           " (0: the default " + std::to_string(SAMFAST_DEFAULT_CACHE_SLICES) +
                                           "), got " + std::to_string(options.cache_slices));
  if (options.threads < 0)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "threads must be >= 1 (0: the default), got " + std::to_string(options.threads));
  if (!options.precision.empty() && options.precision != "fp32" && options.precision != "bf16" &&
      options.precision != "fp16")
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "precision \"" + options.precision + "\" unknown; use fp32 or bf16");

  manifest_ = read_manifest(export_dir);
  const std::string backend = backend_for(manifest_.format);
  if (!asked.empty() && asked != backend)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "backend " + asked + " cannot run " + manifest_.folder + ": its format is " +
                                           manifest_.format + ", which runs on " + backend);
  BackendOptions backend_options;
  backend_options.device = options.device.empty() ? (manifest_.format == "engine" ? "cuda" : "cpu") : options.device;
  if (!valid_device(backend_options.device))
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "device \"" + backend_options.device + "\" unknown; use cpu, cuda or cuda:N");
  backend_options.precision = options.precision.empty() ? manifest_.precision : options.precision;
  backend_options.threads = options.threads ? options.threads : default_threads();
  if (backend == "openvino") {
    if (backend_options.device != "cpu")
      fail(SAMFAST_ERR_UNSUPPORTED, "device " + backend_options.device +
                                        " asked for, but the openvino backend runs on the CPU only");
    if (backend_options.precision == "fp16")
      fail(SAMFAST_ERR_UNSUPPORTED, "precision fp16 is for TensorRT engines; OpenVINO runs fp32 or bf16");
    if (backend_options.precision == "bf16" && !openvino_has_bf16())
      fail(SAMFAST_ERR_UNSUPPORTED, "precision bf16 asked for, but this CPU has no native bf16 (OpenVINO needs "
                                    "AVX-512 BF16 or AMX): use fp32");
    backend_ = make_openvino_backend(manifest_, backend_options);
  } else {
    if (backend_options.precision != manifest_.precision)
      fail(SAMFAST_ERR_UNSUPPORTED, "precision " + backend_options.precision + " asked for, but " + manifest_.folder +
                                        " is a " + manifest_.precision + " " + manifest_.format +
                                        " set (bf16 is OpenVINO's, on onnx sets)");
    backend_ = open_plugin_backend(manifest_, backend_options);
  }
  cache_slices_ = std::min(options.cache_slices ? options.cache_slices : SAMFAST_DEFAULT_CACHE_SLICES,
                           backend_->max_slices());
}

std::vector<float> Model::prepare(const float* pixels, int64_t height, int64_t width, int channels,
                                  int64_t new_height, int64_t new_width) const {
  // preprocess.to_three_channels + resize_longest_side (antialiased bilinear). A single channel is
  // repeated to three: its three resized planes are equal, so it is resized once.
  const int64_t plane = new_height * new_width;
  std::vector<float> resized(static_cast<size_t>(3 * plane));
  if (channels == 1) {
    resize_antialiased(pixels, 1, height, width, resized.data(), new_height, new_width);
    std::copy(resized.begin(), resized.begin() + plane, resized.begin() + plane);
    std::copy(resized.begin(), resized.begin() + plane, resized.begin() + 2 * plane);
  } else {
    std::vector<float> planes(static_cast<size_t>(3 * height * width));
    for (int64_t i = 0; i < height * width; ++i)
      for (int c = 0; c < 3; ++c) planes[c * height * width + i] = pixels[3 * i + c];
    resize_antialiased(planes.data(), 3, height, width, resized.data(), new_height, new_width);
  }
  // Normalisation over the resized slice (Predictor.prepare_image), element by element in float32
  // exactly as numpy computes it; padding with 0 afterwards (bottom and right).
  const int64_t size = manifest_.input_size;
  std::vector<float> images(static_cast<size_t>(3 * size * size), 0.0f);
  const float* src = resized.data();
  if (manifest_.normalization == "minmax") {
    auto [lo_it, hi_it] = std::minmax_element(resized.begin(), resized.end());
    const float lo = *lo_it;
    // numpy: (resized - low) / max(high - low, 1e-8) with Python floats: the difference is taken in
    // float64 and the divisor rounded to float32.
    const float denominator = static_cast<float>(std::max(static_cast<double>(*hi_it) - static_cast<double>(lo), 1e-8));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < new_height; ++y)
        for (int64_t x = 0; x < new_width; ++x)
          images[(c * size + y) * size + x] = (src[c * plane + y * new_width + x] - lo) / denominator;
  } else {
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < new_height; ++y)
        for (int64_t x = 0; x < new_width; ++x)
          images[(c * size + y) * size + x] = (src[c * plane + y * new_width + x] - kPixelMean[c]) / kPixelStd[c];
  }
  return images;
}

void Model::set_slice(const float* pixels, int height, int width, int channels, double spacing_y, double spacing_x) {
  if (!pixels) fail(SAMFAST_ERR_INVALID_ARGUMENT, "pixels is NULL");
  if (height < 1 || width < 1 || height > kMaxSide || width > kMaxSide)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "slice size " + size_text(width, height) + " is not between 1 and " +
                                           std::to_string(kMaxSide) + " pixels a side");
  if (channels != 1 && channels != 3)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "channels must be 1 or 3, got " + std::to_string(channels));
  if (!(std::isfinite(spacing_y) && std::isfinite(spacing_x) && spacing_y > 0 && spacing_x > 0))
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "spacing must be finite and > 0 (mm per pixel), got " + xy_text(spacing_y, spacing_x));
  const int64_t count = int64_t(height) * width * channels;
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(pixels[i])) fail(SAMFAST_ERR_INVALID_ARGUMENT, "the slice contains NaN or infinite values");

  const int32_t shape[3] = {height, width, channels};
  std::string key = sha256_parts({{shape, sizeof shape}, {pixels, sizeof(float) * static_cast<size_t>(count)}});
  const auto [new_height, new_width] = preprocess_shape(height, width, manifest_.input_size);
  auto hit = std::find_if(cache_.begin(), cache_.end(), [&](const auto& entry) { return entry.first == key; });
  if (hit != cache_.end()) {
    cache_.splice(cache_.begin(), cache_, hit);  // most recent first
    current_ = cache_.front().second;
  } else {
    current_.reset();
    std::vector<float> images = prepare(pixels, height, width, channels, new_height, new_width);
    // Make room first, so at most cache_slices_ encodings are held even while encoding.
    while (static_cast<int>(cache_.size()) >= cache_slices_) cache_.pop_back();
    current_ = backend_->encode(images.data());
    cache_.emplace_front(std::move(key), current_);
  }
  height_ = height;
  width_ = width;
  new_height_ = new_height;
  new_width_ = new_width;
  spacing_y_ = spacing_y;
  spacing_x_ = spacing_x;
}

void Model::predict(const samfast_prompt& prompt, samfast_output& out) {
  if (!current_) fail(SAMFAST_ERR_NO_SLICE, "no slice set: call samfast_set_slice first");
  const int n = prompt.n_points;
  if (n < 0 || n > kMaxPoints)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "n_points must be between 0 and " + std::to_string(kMaxPoints) +
                                           ", got " + std::to_string(n));
  if (n > 0 && (!prompt.points || !prompt.labels))
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "n_points is " + std::to_string(n) + " but points or labels is NULL");
  if (n == 0 && !prompt.box && !prompt.mask_input)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "give at least one prompt: points, a box or a mask");
  if (!out.masks) fail(SAMFAST_ERR_INVALID_ARGUMENT, "out->masks is NULL");

  auto outside = [&](float x, float y) { return x < 0 || y < 0 || x > width_ || y > height_; };
  for (int i = 0; i < n; ++i) {
    float x = prompt.points[2 * i], y = prompt.points[2 * i + 1];
    if (!std::isfinite(x) || !std::isfinite(y))
      fail(SAMFAST_ERR_INVALID_ARGUMENT, "point coordinates must be finite numbers");
    if (prompt.labels[i] != 0 && prompt.labels[i] != 1)
      fail(SAMFAST_ERR_INVALID_ARGUMENT, "point labels must be 1 (foreground) or 0 (background), got " +
                                             std::to_string(prompt.labels[i]));
    if (outside(x, y))
      fail(SAMFAST_ERR_OUT_OF_RANGE, "point " + std::to_string(i) + " " + xy_text(x, y) + " lies outside the " +
                                         size_text(width_, height_) + " slice");
  }
  if (prompt.box) {
    const float* b = prompt.box;
    if (!std::isfinite(b[0]) || !std::isfinite(b[1]) || !std::isfinite(b[2]) || !std::isfinite(b[3]))
      fail(SAMFAST_ERR_INVALID_ARGUMENT, "box coordinates must be finite numbers");
    if (!(b[2] > b[0]) || !(b[3] > b[1]))
      fail(SAMFAST_ERR_INVALID_ARGUMENT, "box is empty or inverted: need x0 < x1 and y0 < y1");
    if (outside(b[0], b[1]) || outside(b[2], b[3]))
      fail(SAMFAST_ERR_OUT_OF_RANGE, "the box " + xy_text(b[0], b[1]) + "-" + xy_text(b[2], b[3]) +
                                         " lies outside the " + size_text(width_, height_) + " slice");
  }
  const int64_t low = manifest_.low_res_size;
  if (prompt.mask_input)
    for (int64_t i = 0; i < low * low; ++i)
      if (!std::isfinite(prompt.mask_input[i]))
        fail(SAMFAST_ERR_INVALID_ARGUMENT, "mask_input contains NaN or infinite values");

  const int n_masks = prompt.multimask ? 3 : 1;
  out.n_masks = n_masks;
  const size_t pixels = static_cast<size_t>(height_) * static_cast<size_t>(width_);
  auto need = [&](const char* what, size_t have, size_t want, const char* unit, const std::string& of) {
    if (have < want)
      fail(SAMFAST_ERR_BUFFER_TOO_SMALL, std::string("out->") + what + " holds " + std::to_string(have) + " " + unit +
                                             ", need " + std::to_string(want) + " (" + of + ")");
  };
  std::string masks_of = std::to_string(n_masks) + (n_masks == 1 ? " mask" : " masks");
  need("masks_capacity", out.masks_capacity, n_masks * pixels, "bytes", masks_of + " of " + size_text(width_, height_));
  if (out.iou) need("iou_capacity", out.iou_capacity, n_masks, "floats", masks_of);
  if (out.low_res)
    need("low_res_capacity", out.low_res_capacity, n_masks * static_cast<size_t>(low * low), "floats",
         masks_of + " of " + size_text(low, low));

  // Prompts.to_sam_onnx: the user's points, then the box corners labelled 2 and 3, or a padding
  // point (0, 0) labelled -1 when there is no box. Coordinates go into the resized frame.
  DecoderPrompt request;
  for (int i = 0; i < n; ++i) {
    request.coords.push_back(scale_coord(prompt.points[2 * i], new_width_, width_));
    request.coords.push_back(scale_coord(prompt.points[2 * i + 1], new_height_, height_));
    request.labels.push_back(static_cast<float>(prompt.labels[i]));
  }
  if (prompt.box) {
    for (int k = 0; k < 2; ++k) {
      request.coords.push_back(scale_coord(prompt.box[2 * k], new_width_, width_));
      request.coords.push_back(scale_coord(prompt.box[2 * k + 1], new_height_, height_));
    }
    request.labels.insert(request.labels.end(), {2.0f, 3.0f});
  } else {
    request.coords.insert(request.coords.end(), {0.0f, 0.0f});
    request.labels.push_back(-1.0f);
  }
  request.mask_input = prompt.mask_input;
  Decoded decoded;
  backend_->decode(*current_, request, decoded);

  // Mask token 0 for one mask, tokens 1-3 for three (MaskDecoder.forward's choice), then
  // Predictor.postprocess_masks: up to the input square, crop the unpadded part, up to the slice.
  const int first = prompt.multimask ? 1 : 0;
  const int64_t size = manifest_.input_size;
  std::vector<float> cropped(static_cast<size_t>(new_height_ * new_width_)), logits(pixels);
  for (int k = 0; k < n_masks; ++k) {
    const float* low_res = decoded.low_res.data() + (first + k) * low * low;
    resize_bilinear(low_res, low, low, low, size, size, cropped.data(), new_height_, new_width_);
    resize_bilinear(cropped.data(), new_height_, new_width_, new_width_, height_, width_, logits.data(), height_, width_);
    uint8_t* mask = out.masks + k * pixels;
    for (size_t i = 0; i < pixels; ++i) mask[i] = logits[i] > 0.0f ? 1 : 0;
    if (out.iou) out.iou[k] = decoded.iou[first + k];
    if (out.low_res) std::memcpy(out.low_res + k * low * low, low_res, sizeof(float) * low * low);
  }
}

void Model::info(samfast_info& out) const {
  std::memset(&out, 0, sizeof out);
  copy_text(out.model, sizeof out.model, manifest_.model);
  copy_text(out.weights, sizeof out.weights, manifest_.weights);
  copy_text(out.format, sizeof out.format, manifest_.format);
  copy_text(out.backend, sizeof out.backend, backend_->name());
  copy_text(out.device, sizeof out.device, backend_->device());
  copy_text(out.precision, sizeof out.precision, backend_->precision());
  copy_text(out.normalization, sizeof out.normalization, manifest_.normalization);
  out.input_size = manifest_.input_size;
  out.low_res_size = manifest_.low_res_size;
  out.embedding_channels = manifest_.embedding_shape[0];
  out.embedding_height = manifest_.embedding_shape[1];
  out.embedding_width = manifest_.embedding_shape[2];
  out.cache_slices = cache_slices_;
  out.slice_bytes = backend_->slice_bytes();
}

void Model::slice(int* height, int* width, double* spacing_y, double* spacing_x) const {
  if (!current_) fail(SAMFAST_ERR_NO_SLICE, "no slice set: call samfast_set_slice first");
  if (height) *height = static_cast<int>(height_);
  if (width) *width = static_cast<int>(width_);
  if (spacing_y) *spacing_y = spacing_y_;
  if (spacing_x) *spacing_x = spacing_x_;
}

}  // namespace samfast
