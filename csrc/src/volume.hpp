// The 3D walk from one box (samfast_segment_volume): the rule of samfast/clinical/propagate.py and
// samfast/clinical/segment.py ("3d" mode), step by step, over Model's set_slice and predict.
#pragma once

#include <cstdint>

#include "model.hpp"
#include "samfast.h"

namespace samfast {

// The defaults of samfast.clinical.propagate.PropagationRule.
void default_volume_options(samfast_volume_options& options);

// Validates everything before the first slice is encoded; on any failure out_mask is all zero and
// out_scores / out_boxes (when given) all NaN. options: NULL for the defaults.
void segment_volume(Model& model, const float* volume, int depth, int height, int width, double spacing_z,
                    double spacing_y, double spacing_x, const float* box3d, const samfast_volume_options* options,
                    uint8_t* out_mask, float* out_scores, float* out_boxes);

}  // namespace samfast
