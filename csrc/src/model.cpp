#include "model.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "error.hpp"

namespace samfast {
namespace {

// samfast.models.registry._SAM_MEAN / _SAM_STD: "imagenet" normalisation on a 0..255 slice.
constexpr float kPixelMean[3] = {123.675f, 116.28f, 103.53f};
constexpr float kPixelStd[3] = {58.395f, 57.12f, 57.375f};
constexpr int64_t kMaxSide = 1 << 15;
constexpr int kMaxPoints = 4096;

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

at::Tensor bilinear(const at::Tensor& input, int64_t height, int64_t width, bool antialias) {
  // What torch.nn.functional.interpolate(input, (height, width), mode="bilinear",
  // align_corners=False, antialias=...) dispatches to when given a size (no scale factors).
  if (antialias) return at::_upsample_bilinear2d_aa(input, {height, width}, false, std::nullopt, std::nullopt);
  return at::upsample_bilinear2d(input, {height, width}, false, std::nullopt, std::nullopt);
}

}  // namespace

std::pair<int64_t, int64_t> preprocess_shape(int64_t height, int64_t width, int64_t target) {
  double scale = static_cast<double>(target) * 1.0 / static_cast<double>(std::max(height, width));
  double new_height = static_cast<double>(height) * scale, new_width = static_cast<double>(width) * scale;
  return {static_cast<int64_t>(new_height + 0.5), static_cast<int64_t>(new_width + 0.5)};
}

Model::Model(const std::string& export_dir, const char* device) {
  manifest_ = read_manifest(export_dir);
  std::string wanted = device && *device ? device : (manifest_.format == "engine" ? "cuda" : "cpu");
  if (!valid_device(wanted)) fail(SAMFAST_ERR_INVALID_ARGUMENT, "device \"" + wanted + "\" unknown; use cpu, cuda or cuda:N");
  if (manifest_.format == "torchscript") {
    backend_ = make_torchscript_backend(manifest_, wanted);
  } else {
#ifdef SAMFAST_WITH_TENSORRT
    backend_ = make_tensorrt_backend(manifest_, wanted);
#else
    fail(SAMFAST_ERR_UNSUPPORTED, manifest_.folder + " holds TensorRT engines, but this libsamfast was built without "
                                                     "TensorRT: open the torchscript set instead, or rebuild with TensorRT");
#endif
  }
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

  has_slice_ = false;
  backend_->drop_embedding();
  const int64_t size = manifest_.input_size;
  const auto [new_height, new_width] = preprocess_shape(height, width, size);

  at::Tensor images;
  {
    c10::InferenceMode guard;
    // preprocess.to_three_channels + resize_longest_side: an H x W x 3 float32 array seen as
    // (1, 3, H, W) through permute, resized with antialiasing.
    at::Tensor hwc = at::from_blob(const_cast<float*>(pixels), {height, width, channels}, at::kFloat);
    hwc = channels == 1 ? hwc.repeat({1, 1, 3}) : hwc;
    at::Tensor resized = bilinear(hwc.permute({2, 0, 1}).unsqueeze(0), new_height, new_width, true);
    resized = resized.contiguous();  // (1, 3, h, w)

    // Normalisation over the resized slice (Predictor.prepare_image), element by element in float32
    // exactly as numpy computes it; padding with 0 afterwards (bottom and right).
    images = at::zeros({1, 3, size, size}, at::kFloat);
    const float* src = resized.data_ptr<float>();
    float* dst = images.data_ptr<float>();
    const int64_t plane = new_height * new_width;
    if (manifest_.normalization == "minmax") {
      auto [lo_it, hi_it] = std::minmax_element(src, src + 3 * plane);
      const float lo = *lo_it;
      // numpy: (resized - low) / max(high - low, 1e-8) with Python floats: the difference is taken in
      // float64 and the divisor rounded to float32.
      const float denominator =
          static_cast<float>(std::max(static_cast<double>(*hi_it) - static_cast<double>(lo), 1e-8));
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < new_height; ++y)
          for (int64_t x = 0; x < new_width; ++x)
            dst[(c * size + y) * size + x] = (src[c * plane + y * new_width + x] - lo) / denominator;
    } else {
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < new_height; ++y)
          for (int64_t x = 0; x < new_width; ++x)
            dst[(c * size + y) * size + x] = (src[c * plane + y * new_width + x] - kPixelMean[c]) / kPixelStd[c];
    }
  }
  backend_->encode(images);
  height_ = height;
  width_ = width;
  new_height_ = new_height;
  new_width_ = new_width;
  spacing_y_ = spacing_y;
  spacing_x_ = spacing_x;
  has_slice_ = true;
}

void Model::predict(const samfast_prompt& prompt, samfast_output& out) {
  if (!has_slice_) fail(SAMFAST_ERR_NO_SLICE, "no slice set: call samfast_set_slice first");
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
  const int64_t total = n + (prompt.box ? 2 : 1);
  at::Tensor coords = at::zeros({1, total, 2}, at::kFloat);
  at::Tensor labels = at::zeros({1, total}, at::kFloat);
  float* c = coords.data_ptr<float>();
  float* l = labels.data_ptr<float>();
  for (int i = 0; i < n; ++i) {
    c[2 * i] = scale_coord(prompt.points[2 * i], new_width_, width_);
    c[2 * i + 1] = scale_coord(prompt.points[2 * i + 1], new_height_, height_);
    l[i] = static_cast<float>(prompt.labels[i]);
  }
  if (prompt.box) {
    for (int k = 0; k < 2; ++k) {
      c[2 * (n + k)] = scale_coord(prompt.box[2 * k], new_width_, width_);
      c[2 * (n + k) + 1] = scale_coord(prompt.box[2 * k + 1], new_height_, height_);
    }
    l[n] = 2.0f;
    l[n + 1] = 3.0f;
  } else {
    l[n] = -1.0f;
  }
  at::Tensor mask = at::zeros({1, 1, low, low}, at::kFloat);
  if (prompt.mask_input) std::memcpy(mask.data_ptr<float>(), prompt.mask_input, sizeof(float) * low * low);
  at::Tensor has_mask = at::full({1}, prompt.mask_input ? 1.0f : 0.0f, at::kFloat);

  auto [low_res, iou] = backend_->decode(coords, labels, mask, has_mask);
  c10::InferenceMode guard;
  // Mask token 0 for one mask, tokens 1-3 for three (MaskDecoder.forward's choice).
  const int64_t first = prompt.multimask ? 1 : 0;
  low_res = low_res.slice(1, first, first + n_masks).contiguous();
  iou = iou.slice(1, first, first + n_masks).contiguous();

  // Predictor.postprocess_masks: up to the input square, crop the unpadded part, up to the slice.
  at::Tensor logits = bilinear(low_res, manifest_.input_size, manifest_.input_size, false);
  logits = logits.slice(2, 0, new_height_).slice(3, 0, new_width_);
  logits = bilinear(logits, height_, width_, false);
  at::Tensor masks = logits.gt(0.0).to(at::kByte).contiguous();
  std::memcpy(out.masks, masks.data_ptr<uint8_t>(), n_masks * pixels);
  if (out.iou) std::memcpy(out.iou, iou.data_ptr<float>(), sizeof(float) * n_masks);
  if (out.low_res) std::memcpy(out.low_res, low_res.data_ptr<float>(), sizeof(float) * n_masks * low * low);
}

void Model::info(samfast_info& out) const {
  std::memset(&out, 0, sizeof out);
  copy_text(out.model, sizeof out.model, manifest_.model);
  copy_text(out.weights, sizeof out.weights, manifest_.weights);
  copy_text(out.format, sizeof out.format, manifest_.format);
  copy_text(out.backend, sizeof out.backend, backend_->name());
  copy_text(out.device, sizeof out.device, backend_->device());
  copy_text(out.precision, sizeof out.precision, manifest_.precision);
  copy_text(out.normalization, sizeof out.normalization, manifest_.normalization);
  out.input_size = manifest_.input_size;
  out.low_res_size = manifest_.low_res_size;
  out.embedding_channels = manifest_.embedding_shape[0];
  out.embedding_height = manifest_.embedding_shape[1];
  out.embedding_width = manifest_.embedding_shape[2];
}

void Model::slice(int* height, int* width, double* spacing_y, double* spacing_x) const {
  if (!has_slice_) fail(SAMFAST_ERR_NO_SLICE, "no slice set: call samfast_set_slice first");
  if (height) *height = static_cast<int>(height_);
  if (width) *width = static_cast<int>(width_);
  if (spacing_y) *spacing_y = spacing_y_;
  if (spacing_x) *spacing_x = spacing_x_;
}

}  // namespace samfast
