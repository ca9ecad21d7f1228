// Pre- and post-processing arithmetic in plain C++, reproducing what samfast.preprocess and
// samfast.runtime.predictor do through torch.nn.functional.interpolate (float32, CPU kernels of
// aten/src/ATen/native/cpu/UpSampleKernel.cpp), so masks match the Python predictor's.
#pragma once

#include <cstdint>
#include <utility>

namespace samfast {

// (height, width) once the longest side is scaled to `target` (ResizeLongestSide.get_preprocess_shape).
std::pair<int64_t, int64_t> preprocess_shape(int64_t height, int64_t width, int64_t target);

// F.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=False, antialias=True) of
// `planes` planes of in_h x in_w (contiguous) into planes of out_h x out_w (contiguous).
void resize_antialiased(const float* src, int64_t planes, int64_t in_h, int64_t in_w, float* dst, int64_t out_h,
                        int64_t out_w);

// F.interpolate(x, (full_h, full_w), mode="bilinear", align_corners=False) of one in_h x in_w
// plane (rows `in_stride` floats apart), of which only the top-left out_h x out_w window is
// written (dst rows out_w apart): the crop Predictor.postprocess_masks takes afterwards.
void resize_bilinear(const float* src, int64_t in_h, int64_t in_w, int64_t in_stride, int64_t full_h,
                     int64_t full_w, float* dst, int64_t out_h, int64_t out_w);

}  // namespace samfast
