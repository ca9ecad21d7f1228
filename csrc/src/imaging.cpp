// The float32 arithmetic of torch's CPU interpolation, term by term (same types, same order of
// the sums), so results agree with torch to a few ulp: see imaging.hpp.
#include "imaging.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace samfast {
namespace {

// One axis of an antialiased resize: for each output index, the first input index, how many
// inputs it mixes and their weights (HelperInterpBase::_compute_indices_min_size_weights_aa with
// scalar_t = float and HelperInterpLinear::aa_filter, interp_size 2).
struct AaAxis {
  std::vector<int64_t> first, count;
  std::vector<float> weights;  // out x max_taps
  int64_t max_taps = 0;
};

float triangle(float x) {  // HelperInterpLinear::aa_filter<float>
  if (x < 0.0) x = -x;
  if (x < 1.0) return static_cast<float>(1.0 - x);
  return 0.0f;
}

AaAxis aa_axis(int64_t in, int64_t out) {
  AaAxis axis;
  const float scale = static_cast<float>(in) / static_cast<float>(out);  // area_pixel_compute_scale<float>
  const float support = (scale >= 1.0) ? static_cast<float>((2 * 0.5) * scale) : static_cast<float>(2 * 0.5);
  axis.max_taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  axis.first.resize(out);
  axis.count.resize(out);
  axis.weights.assign(static_cast<size_t>(out * axis.max_taps), 0.0f);
  const float invscale = (scale >= 1.0) ? static_cast<float>(1.0 / scale) : 1.0f;
  for (int64_t i = 0; i < out; ++i) {
    const float center = static_cast<float>(scale * (i + 0.5));
    const int64_t xmin = std::max(static_cast<int64_t>(center - support + 0.5), int64_t(0));
    int64_t xsize = std::min(static_cast<int64_t>(center + support + 0.5), in) - xmin;
    xsize = std::clamp(xsize, int64_t(0), axis.max_taps);
    float* w = &axis.weights[static_cast<size_t>(i * axis.max_taps)];
    float total = 0.0f;
    for (int64_t j = 0; j < xsize; ++j) {
      w[j] = triangle(static_cast<float>((static_cast<float>(j + xmin) - center + 0.5) * invscale));
      total += w[j];
    }
    if (total != 0.0f)
      for (int64_t j = 0; j < xsize; ++j) w[j] /= total;
    axis.first[i] = xmin;
    axis.count[i] = xsize;
  }
  return axis;
}

// interpolate_aa_single_dim: t0 * w0, then += tj * wj.
inline float mix(const float* src, int64_t stride, const float* w, int64_t n) {
  float out = src[0] * w[0];
  for (int64_t j = 1; j < n; ++j) out += src[j * stride] * w[j];
  return out;
}

// One axis of a plain bilinear resize (HelperInterpLinear::compute_indices_weights,
// align_corners=False, no scale factor given).
struct LinearAxis {
  std::vector<int64_t> i0, i1;
  std::vector<float> w0, w1;
};

LinearAxis linear_axis(int64_t in, int64_t out, int64_t count) {
  LinearAxis axis;
  axis.i0.resize(count);
  axis.i1.resize(count);
  axis.w0.resize(count);
  axis.w1.resize(count);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t i = 0; i < count; ++i) {
    if (in == out) {
      axis.i0[i] = axis.i1[i] = i;
      axis.w0[i] = 1.0f;
      axis.w1[i] = 0.0f;
      continue;
    }
    float real = scale * (static_cast<float>(i) + 0.5f) - 0.5f;  // area_pixel_compute_source_index
    if (real < 0) real = 0;
    const int64_t index = std::min(static_cast<int64_t>(std::floor(real)), in - 1);  // guard_index_and_lambda
    const float lambda = std::min(std::max(real - static_cast<float>(index), 0.0f), 1.0f);
    axis.i0[i] = index;
    axis.i1[i] = index + (index < in - 1 ? 1 : 0);
    axis.w1[i] = lambda;
    axis.w0[i] = 1.0f - lambda;
  }
  return axis;
}

}  // namespace

std::pair<int64_t, int64_t> preprocess_shape(int64_t height, int64_t width, int64_t target) {
  double scale = static_cast<double>(target) * 1.0 / static_cast<double>(std::max(height, width));
  double new_height = static_cast<double>(height) * scale, new_width = static_cast<double>(width) * scale;
  return {static_cast<int64_t>(new_height + 0.5), static_cast<int64_t>(new_width + 0.5)};
}

void resize_antialiased(const float* src, int64_t planes, int64_t in_h, int64_t in_w, float* dst, int64_t out_h,
                        int64_t out_w) {
  // separable_upsample_generic_Nd_kernel_impl: the width first, then the height; an axis whose
  // size does not change is not resampled.
  std::vector<float> across;
  const float* rows = src;
  if (out_w != in_w) {
    const AaAxis ax = aa_axis(in_w, out_w);
    float* out = in_h == out_h ? dst : (across.resize(static_cast<size_t>(planes * in_h * out_w)), across.data());
    for (int64_t r = 0; r < planes * in_h; ++r)
      for (int64_t x = 0; x < out_w; ++x)
        out[r * out_w + x] = mix(src + r * in_w + ax.first[x], 1, &ax.weights[x * ax.max_taps], ax.count[x]);
    if (in_h == out_h) return;
    rows = out;
  }
  if (out_h == in_h) {
    std::copy(src, src + planes * in_h * in_w, dst);
    return;
  }
  const AaAxis ay = aa_axis(in_h, out_h);
  for (int64_t p = 0; p < planes; ++p) {
    const float* plane = rows + p * in_h * out_w;
    for (int64_t y = 0; y < out_h; ++y)
      for (int64_t x = 0; x < out_w; ++x)
        dst[(p * out_h + y) * out_w + x] =
            mix(plane + ay.first[y] * out_w + x, out_w, &ay.weights[y * ay.max_taps], ay.count[y]);
  }
}

void resize_bilinear(const float* src, int64_t in_h, int64_t in_w, int64_t in_stride, int64_t full_h, int64_t full_w,
                     float* dst, int64_t out_h, int64_t out_w) {
  const LinearAxis ay = linear_axis(in_h, full_h, out_h), ax = linear_axis(in_w, full_w, out_w);
  // upsample_generic_Nd_kernel_impl's Interpolate<2>: each row mixed across, then the two rows.
  for (int64_t y = 0; y < out_h; ++y) {
    const float* r0 = src + ay.i0[y] * in_stride;
    const float* r1 = src + ay.i1[y] * in_stride;
    const float wy0 = ay.w0[y], wy1 = ay.w1[y];
    float* out = dst + y * out_w;
    for (int64_t x = 0; x < out_w; ++x) {
      const int64_t x0 = ax.i0[x], x1 = ax.i1[x];
      const float wx0 = ax.w0[x], wx1 = ax.w1[x];
      float top = r0[x0] * wx0;
      top += r0[x1] * wx1;
      float bottom = r1[x0] * wx0;
      bottom += r1[x1] * wx1;
      float value = top * wy0;
      value += bottom * wy1;
      out[x] = value;
    }
  }
}

}  // namespace samfast
