/*
 * segment_slice: segment one slice from a box with libsamfast and write the mask as a PGM image.
 *
 *   samfast_segment EXPORT_DIR SLICE.npy X0 Y0 X1 Y1 MASK.pgm [--spacing SY SX] [--device DEV]
 *
 * EXPORT_DIR is a set written by `samfast export --format onnx` (OpenVINO) or `--format torchscript`
 * (LibTorch builds); it holds manifest.json.
 * SLICE.npy is an H x W (or H x W x 3) float32/float64 array in C order, already normalised the
 * way the model expects its input intensities (e.g. samfast.preprocess.normalize_mr_putz for MRI),
 * for example:
 *
 *   python -c "import numpy as np, SimpleITK as sitk; from samfast.preprocess import normalize_mr_putz; \
 *     v = sitk.GetArrayFromImage(sitk.ReadImage('data/brats_demo/BraTS20_Demo_001/BraTS20_Demo_001_t1ce.nii.gz')); \
 *     np.save('slice.npy', normalize_mr_putz(v)[94])"
 *
 * The box is x0 y0 x1 y1 in pixels (x = column). The mask is written 255 inside, 0 outside.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, sysconf */
#include <samfast.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* A minimal .npy reader: version 1/2 header, little-endian <f4 or <f8, C order, 2 or 3 dims. */
static float* read_npy(const char* path, int* height, int* width, int* channels) {
  FILE* f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    return NULL;
  }
  unsigned char magic[8];
  unsigned header_len = 0;
  float* pixels = NULL;
  char* header = NULL;
  if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) goto bad;
  if (magic[6] == 1) {
    unsigned char n[2];
    if (fread(n, 1, 2, f) != 2) goto bad;
    header_len = n[0] | (n[1] << 8);
  } else {
    unsigned char n[4];
    if (fread(n, 1, 4, f) != 4) goto bad;
    header_len = n[0] | (n[1] << 8) | (n[2] << 16) | ((unsigned)n[3] << 24);
  }
  if (header_len == 0 || header_len > 65536) goto bad;
  header = calloc(header_len + 1, 1);
  if (!header || fread(header, 1, header_len, f) != header_len) goto bad;
  int f8 = strstr(header, "'<f8'") != NULL;
  if ((!f8 && !strstr(header, "'<f4'")) || strstr(header, "'fortran_order': True")) {
    fprintf(stderr, "%s: need a little-endian float32/float64 array in C order\n", path);
    goto fail;
  }
  const char* shape = strstr(header, "'shape': (");
  if (!shape) goto bad;
  int dims[3] = {0, 0, 1};
  int n = sscanf(shape + 10, "%d, %d, %d", &dims[0], &dims[1], &dims[2]);
  if (n < 2 || dims[0] < 1 || dims[1] < 1 || (n == 3 && dims[2] != 1 && dims[2] != 3)) {
    fprintf(stderr, "%s: need an H x W or H x W x 3 array\n", path);
    goto fail;
  }
  size_t count = (size_t)dims[0] * dims[1] * dims[2];
  pixels = malloc(count * sizeof(float));
  if (!pixels) goto fail;
  for (size_t i = 0; i < count; ++i) {
    if (f8) {
      double v;
      if (fread(&v, sizeof v, 1, f) != 1) goto bad;
      pixels[i] = (float)v;
    } else if (fread(&pixels[i], sizeof(float), 1, f) != 1) {
      goto bad;
    }
  }
  *height = dims[0];
  *width = dims[1];
  *channels = dims[2];
  free(header);
  fclose(f);
  return pixels;
bad:
  fprintf(stderr, "%s: not a readable .npy file\n", path);
fail:
  free(pixels);
  free(header);
  fclose(f);
  return NULL;
}

static int write_pgm(const char* path, const uint8_t* mask, int height, int width) {
  FILE* f = fopen(path, "wb");
  if (!f) return -1;
  fprintf(f, "P5\n%d %d\n255\n", width, height);
  for (size_t i = 0; i < (size_t)height * width; ++i) fputc(mask[i] ? 255 : 0, f);
  return fclose(f);
}

#define CHECK(call)                                                                        \
  do {                                                                                     \
    samfast_status status_ = (call);                                                       \
    if (status_ != SAMFAST_OK) {                                                           \
      fprintf(stderr, "%s: %s\n", samfast_status_name(status_), samfast_last_error());     \
      goto done;                                                                           \
    }                                                                                      \
  } while (0)

int main(int argc, char** argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: %s EXPORT_DIR SLICE.npy X0 Y0 X1 Y1 MASK.pgm [--spacing SY SX] [--device DEV]\n",
            argv[0]);
    return 2;
  }
  double spacing_y = 1.0, spacing_x = 1.0;
  const char* device = NULL;
  for (int i = 8; i < argc; ++i) {
    if (!strcmp(argv[i], "--spacing") && i + 2 < argc) {
      spacing_y = atof(argv[++i]);
      spacing_x = atof(argv[++i]);
    } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
      device = argv[++i];
    } else {
      fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const float box[4] = {(float)atof(argv[3]), (float)atof(argv[4]), (float)atof(argv[5]), (float)atof(argv[6])};

  int height, width, channels, rc = 1;
  float* pixels = read_npy(argv[2], &height, &width, &channels);
  if (!pixels) return 1;
  samfast_model* model = NULL;
  uint8_t* mask = malloc((size_t)height * width);
  if (!mask) goto done;

  double t0 = now_ms();
  CHECK(samfast_open(argv[1], device, &model));
  samfast_info info = SAMFAST_INFO_INIT();
  CHECK(samfast_get_info(model, &info));
  double t1 = now_ms();
  CHECK(samfast_set_slice(model, pixels, height, width, channels, spacing_y, spacing_x));
  double t2 = now_ms();

  samfast_prompt prompt = SAMFAST_PROMPT_INIT(.box = box, .multimask = 0);
  float iou = 0.0f;
  samfast_output out =
      SAMFAST_OUTPUT_INIT(.masks = mask, .masks_capacity = (size_t)height * width, .iou = &iou, .iou_capacity = 1);
  CHECK(samfast_predict(model, &prompt, &out));
  double t3 = now_ms();

  size_t inside = 0;
  for (size_t i = 0; i < (size_t)height * width; ++i) inside += mask[i];
  printf("model %s (%s, %s on %s), slice %dx%d\n", info.model, info.weights, info.backend, info.device, width,
         height);
  printf("box %g %g %g %g: predicted IoU %.4f, %zu pixels = %.1f mm2\n", box[0], box[1], box[2], box[3], iou,
         inside, inside * spacing_y * spacing_x);
  printf("open %.0f ms, set_slice %.0f ms, predict %.0f ms\n", t1 - t0, t2 - t1, t3 - t2);
  if (write_pgm(argv[7], mask, height, width) != 0) {
    fprintf(stderr, "cannot write %s\n", argv[7]);
    goto done;
  }
  printf("wrote %s\n", argv[7]);
  rc = 0;
done:
  samfast_close(model);
  free(mask);
  free(pixels);
  return rc;
}
