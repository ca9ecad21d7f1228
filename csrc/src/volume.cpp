#include "volume.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "abi.hpp"
#include "error.hpp"

// The walk is compared with Python's mask for mask: every box is computed in the precision numpy
// computes it in (float32 where the arrays are float32, float64 where a float64 scalar or array
// takes part), and this file is compiled with -ffp-contract=off so that no multiply-add is fused.

namespace samfast {
namespace {

constexpr int64_t kMaxSide = 1 << 15;

using Box = std::array<float, 4>;  // x0 y0 x1 y1, as the float32 arrays of propagate.py
using WideBox = std::array<double, 4>;

WideBox widen(const Box& box) { return {box[0], box[1], box[2], box[3]}; }

std::string number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g", value);
  return buffer;
}

// propagate.clip_box: corner-wise max / min (in float64 when the box is float64; the float32 limit
// is exact there), stored as float32, then at least one pixel wide and high, added in float32.
Box clip_box(const WideBox& box, const Box& limit) {
  Box out = {static_cast<float>(std::max(box[0], static_cast<double>(limit[0]))),
             static_cast<float>(std::max(box[1], static_cast<double>(limit[1]))),
             static_cast<float>(std::min(box[2], static_cast<double>(limit[2]))),
             static_cast<float>(std::min(box[3], static_cast<double>(limit[3])))};
  out[2] = std::max(out[2], out[0] + 1.0f);
  out[3] = std::max(out[3], out[1] + 1.0f);
  return out;
}

// samfast.eval.metrics.bounding_box (inclusive pixel indices); false for an empty mask.
bool bounding_box(const uint8_t* mask, int64_t height, int64_t width, Box& out) {
  int64_t x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = mask + y * width;
    for (int64_t x = 0; x < width; ++x)
      if (row[x]) {
        x0 = std::min(x0, x);
        x1 = std::max(x1, x);
        y0 = std::min(y0, y);
        y1 = y;
      }
  }
  if (x1 < 0) return false;
  out = {static_cast<float>(x0), static_cast<float>(y0), static_cast<float>(x1), static_cast<float>(y1)};
  return true;
}

int64_t count(const uint8_t* mask, int64_t pixels) {
  int64_t n = 0;
  for (int64_t i = 0; i < pixels; ++i) n += mask[i] != 0;
  return n;
}

int64_t count_both(const uint8_t* a, const uint8_t* b, int64_t pixels) {
  int64_t n = 0;
  for (int64_t i = 0; i < pixels; ++i) n += (a[i] != 0) & (b[i] != 0);
  return n;
}

struct Walk {
  Model& model;
  const float* volume;
  int64_t depth, height, width;
  double spacing_y, spacing_x;
  const samfast_volume_options& rule;
  double margin_x, margin_y;  // PropagationRule.margin_px: mm per axis, at least one pixel
  Box footprint;
  int z0, z1;
  uint8_t* out_mask;
  float* out_scores;
  float* out_boxes;

  int64_t plane() const { return height * width; }
  uint8_t* mask(int z) const { return out_mask + z * plane(); }

  // SliceModel.predict with a box: one mask (multimask off), written straight into the output.
  float predict(int z, const Box& box) {
    model.set_slice(volume + z * plane(), static_cast<int>(height), static_cast<int>(width), 1, spacing_y, spacing_x);
    samfast_prompt prompt{};
    prompt.box = box.data();
    float iou = 0.0f;
    samfast_output out{};
    out.masks = mask(z);
    out.masks_capacity = static_cast<size_t>(plane());
    out.iou = &iou;
    out.iou_capacity = 1;
    model.predict(prompt, out);
    return iou;
  }

  void record(int z, float score, const Box& box) {
    if (out_scores) out_scores[z] = score;
    if (out_boxes) std::copy(box.begin(), box.end(), out_boxes + 4 * z);
  }

  // propagate.next_box: the mask's box + margins (margins stored as float32), blended with the
  // previous box (momentum and 1 - momentum rounded to float32, as numpy does with a Python float
  // against a float32 array), clipped to the image and to limit.
  Box next_box(const Box& bounds_of_mask, const Box* limit, const Box& previous) const {
    const float mx = static_cast<float>(margin_x), my = static_cast<float>(margin_y);
    Box box = {bounds_of_mask[0] + -mx, bounds_of_mask[1] + -my, bounds_of_mask[2] + mx, bounds_of_mask[3] + my};
    if (rule.momentum > 0) {
      const float keep = static_cast<float>(rule.momentum), take = static_cast<float>(1.0 - rule.momentum);
      for (int i = 0; i < 4; ++i) {
        const float kept = keep * previous[i];
        const float taken = take * box[i];
        box[i] = kept + taken;
      }
    }
    const Box image = {0.0f, 0.0f, static_cast<float>(width - 1), static_cast<float>(height - 1)};
    const Box bound = limit ? clip_box(widen(*limit), image) : image;
    return clip_box(widen(box), bound);
  }

  // Bounds.limit: the footprint shrunk toward the box's ends by the shape prior (the ellipse
  // section of the inscribed ellipsoid at 1), plus the margin. The scale is a float64 scalar, so
  // numpy widens the float32 half-sizes to float64 before the product.
  Box limit(int z) const {
    const double half_depth = (z1 - z0) / 2.0 + 0.5;
    const double t = std::min(1.0, std::fabs(z - (z0 + z1) / 2.0) / half_depth);
    const double scale = 1.0 - rule.shape_prior * (1.0 - std::sqrt(1.0 - t * t));
    const double margin[2] = {margin_x, margin_y};
    WideBox box;
    for (int i = 0; i < 2; ++i) {
      const float centre = (footprint[i] + footprint[i + 2]) / 2.0f;
      const double half = static_cast<double>((footprint[i + 2] - footprint[i]) / 2.0f) * scale + margin[i];
      box[i] = centre - half;
      box[i + 2] = centre + half;
    }
    return clip_box(box, footprint);
  }

  // Bounds.clip_mask: nothing outside the footprint, its corners rounded half to even as Python's
  // round() does (nearbyint in the default rounding mode).
  void clip_mask(int z) const {
    const int64_t x0 = std::max<int64_t>(0, static_cast<int64_t>(std::nearbyint(footprint[0])));
    const int64_t y0 = std::max<int64_t>(0, static_cast<int64_t>(std::nearbyint(footprint[1])));
    const int64_t x1 = std::min<int64_t>(width - 1, static_cast<int64_t>(std::nearbyint(footprint[2])));
    const int64_t y1 = std::min<int64_t>(height - 1, static_cast<int64_t>(std::nearbyint(footprint[3])));
    uint8_t* m = mask(z);
    for (int64_t y = 0; y < height; ++y) {
      uint8_t* row = m + y * width;
      if (y < y0 || y > y1) {
        std::memset(row, 0, static_cast<size_t>(width));
        continue;
      }
      if (x0 > 0) std::memset(row, 0, static_cast<size_t>(std::min(x0, width)));
      if (x1 + 1 < width) std::memset(row + x1 + 1, 0, static_cast<size_t>(width - x1 - 1));
    }
  }

  // The 3D box (z1 > z0): from the middle slice, prompted with the footprint, down to z0 and up
  // to z1; every box within Bounds.limit, every mask within the footprint; no stop rule.
  void bounded() {
    const int middle = z0 + (z1 - z0) / 2;
    float score = predict(middle, footprint);
    clip_mask(middle);
    record(middle, score, footprint);
    for (const auto& [end, step] : {std::pair{z0, -1}, std::pair{z1, 1}}) {
      int previous = middle;
      Box box = footprint;
      for (int z = middle + step; (z - end) * step <= 0; z += step) {
        const Box slice_limit = limit(z);
        Box bounds_of_mask;
        // an empty previous mask: the previous box again (the structure may be faint there)
        if (bounding_box(mask(previous), height, width, bounds_of_mask))
          box = next_box(bounds_of_mask, &slice_limit, box);
        score = predict(z, box);
        clip_mask(z);
        record(z, score, box);
        previous = z;
      }
    }
  }

  // A box on one slice (z0 == z1): the walk runs through the volume until the stop rule ends it;
  // the slice that stops it is dropped (propagate._stop_reason).
  void one_slice() {
    const int start = z0;
    const float start_score = predict(start, footprint);
    record(start, start_score, footprint);
    const double floor = std::max(rule.min_score, rule.min_score_ratio * static_cast<double>(start_score));
    const int64_t pixels = plane();
    for (const auto& [end, step] : {std::pair{0, -1}, std::pair{static_cast<int>(depth - 1), 1}}) {
      Box bounds_of_mask;
      if (start == end || !bounding_box(mask(start), height, width, bounds_of_mask)) continue;
      int previous = start;
      Box box = footprint;
      for (int z = start + step; (z - end) * step <= 0; z += step) {
        bounding_box(mask(previous), height, width, bounds_of_mask);  // never empty: the rule stops first
        box = next_box(bounds_of_mask, nullptr, box);
        const float score = predict(z, box);
        const int64_t area = count(mask(z), pixels);
        const bool stop = area < rule.min_pixels ||
                          static_cast<double>(count_both(mask(z), mask(previous), pixels)) / area < rule.min_overlap ||
                          static_cast<double>(score) < floor;
        if (stop) {
          std::memset(mask(z), 0, static_cast<size_t>(pixels));
          break;
        }
        record(z, score, box);
        previous = z;
      }
    }
  }
};

void check_options(const samfast_volume_options& o) {
  auto in = [](double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; };
  if (!(std::isfinite(o.margin_mm) && o.margin_mm >= 0))
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "margin_mm must be a finite number >= 0, got " + number(o.margin_mm));
  if (!in(o.momentum, 0, 1))
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "momentum must be between 0 and 1, got " + number(o.momentum));
  if (!in(o.shape_prior, 0, 1))
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "shape_prior must be between 0 and 1, got " + number(o.shape_prior));
  if (o.min_pixels < 1)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "min_pixels must be >= 1, got " + std::to_string(o.min_pixels));
  if (!in(o.min_overlap, 0, 1))
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "min_overlap must be between 0 and 1, got " + number(o.min_overlap));
  if (!(std::isfinite(o.min_score_ratio) && o.min_score_ratio >= 0))
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "min_score_ratio must be a finite number >= 0, got " + number(o.min_score_ratio));
  if (!std::isfinite(o.min_score))
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "min_score must be a finite number, got " + number(o.min_score));
}

}  // namespace

void default_volume_options(samfast_volume_options& o) {
  o = samfast_volume_options{};
  o.struct_size = sizeof o;
  o.margin_mm = 5.0;
  o.momentum = 0.7;
  o.shape_prior = 1.0;
  o.min_pixels = 10;
  o.min_overlap = 0.5;
  o.min_score_ratio = 0.8;
  o.min_score = 0.6;
}

void segment_volume(Model& model, const float* volume, int depth, int height, int width, double spacing_z,
                    double spacing_y, double spacing_x, const float* box3d, const samfast_volume_options* given,
                    uint8_t* out_mask, float* out_scores, float* out_boxes) {
  if (!volume) fail(SAMFAST_ERR_INVALID_ARGUMENT, "volume is NULL");
  if (!box3d) fail(SAMFAST_ERR_INVALID_ARGUMENT, "box3d is NULL");
  if (!out_mask) fail(SAMFAST_ERR_INVALID_ARGUMENT, "out_mask is NULL");
  if (depth < 1 || height < 1 || width < 1 || depth > kMaxSide || height > kMaxSide || width > kMaxSide)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, "volume size " + std::to_string(width) + "x" + std::to_string(height) + "x" +
                                           std::to_string(depth) + " is not between 1 and " +
                                           std::to_string(kMaxSide) + " voxels a side");
  const int64_t plane = int64_t(height) * width, total = plane * depth;
  auto clear = [&] {
    std::memset(out_mask, 0, static_cast<size_t>(total));
    const float nan = std::numeric_limits<float>::quiet_NaN();
    if (out_scores) std::fill(out_scores, out_scores + depth, nan);
    if (out_boxes) std::fill(out_boxes, out_boxes + 4 * int64_t(depth), nan);
  };
  try {
    for (double s : {spacing_z, spacing_y, spacing_x})
      if (!(std::isfinite(s) && s > 0))
        fail(SAMFAST_ERR_INVALID_ARGUMENT, "spacing must be finite and > 0 (mm per voxel), got z " + number(spacing_z) +
                                               ", y " + number(spacing_y) + ", x " + number(spacing_x));
    samfast_volume_options defaults;
    default_volume_options(defaults);
    const samfast_volume_options options = given ? read_struct(*given, defaults) : defaults;
    check_options(options);
    for (int i = 0; i < 6; ++i)
      if (!std::isfinite(box3d[i])) fail(SAMFAST_ERR_INVALID_ARGUMENT, "3D box coordinates must be finite numbers");
    char shown_text[160];
    std::snprintf(shown_text, sizeof shown_text, "(%g, %g, %g)-(%g, %g, %g)", box3d[0], box3d[1], box3d[2], box3d[3],
                  box3d[4], box3d[5]);
    const std::string shown = shown_text;
    if (box3d[3] < box3d[0] || box3d[4] < box3d[1] || box3d[5] < box3d[2])
      fail(SAMFAST_ERR_INVALID_ARGUMENT, "3D box " + shown + " is inverted: need x0 <= x1, y0 <= y1, z0 <= z1");
    // prompts.box_to_voxels: voxel i covers [i - 0.5, i + 0.5]; within the outer faces is inside,
    // then the corners are clipped to the voxel centres.
    const double size[3] = {double(width), double(height), double(depth)};
    double lo[3], hi[3];
    for (int a = 0; a < 3; ++a) {
      for (double v : {double(box3d[a]), double(box3d[a + 3])})
        if (v < -0.5 || v > size[a] - 0.5)
          fail(SAMFAST_ERR_OUT_OF_RANGE, "3D box " + shown + " lies outside the " + std::to_string(width) + "x" +
                                             std::to_string(height) + "x" + std::to_string(depth) + " volume");
      lo[a] = std::clamp(double(box3d[a]), 0.0, size[a] - 1);
      hi[a] = std::clamp(double(box3d[a + 3]), 0.0, size[a] - 1);
    }
    if (hi[0] <= lo[0] || hi[1] <= lo[1])
      fail(SAMFAST_ERR_INVALID_ARGUMENT, "3D box " + shown + " is empty in-plane: need x0 < x1 and y0 < y1");
    for (int64_t i = 0; i < total; ++i)
      if (!std::isfinite(volume[i]))
        fail(SAMFAST_ERR_INVALID_ARGUMENT, "the volume contains NaN or infinite values (slice " +
                                               std::to_string(i / plane) + ")");
    clear();

    Walk walk{model, volume, depth, height, width, spacing_y, spacing_x, options,
              std::max(1.0, options.margin_mm / spacing_x), std::max(1.0, options.margin_mm / spacing_y),
              Box{static_cast<float>(lo[0]), static_cast<float>(lo[1]), static_cast<float>(hi[0]),
                  static_cast<float>(hi[1])},
              static_cast<int>(std::nearbyint(lo[2])), static_cast<int>(std::nearbyint(hi[2])), out_mask, out_scores,
              out_boxes};
    if (walk.z1 > walk.z0)
      walk.bounded();
    else
      walk.one_slice();
  } catch (...) {
    clear();
    throw;
  }
}

}  // namespace samfast
