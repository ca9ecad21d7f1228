/*
 * test_capi: the C interface from C (this file is compiled as C11, so the header stays pure C).
 *
 *   test_capi api     SET_DIR          argument checks, NULL pointers, status codes and messages
 *   test_capi abi     SET_DIR          struct_size in every public struct (set, refused when 0 or too
 *                                      small, a newer caller's larger struct read); one version string
 *   test_capi options SET_DIR          samfast_open_with: backend, precision, cache_slices, threads
 *   test_capi cache   SET_DIR          the slice cache gives what a fresh encoding gives
 *   test_capi threads SET_DIR          thread-local last error; two handles on two threads at once
 *   test_capi memory  SET_DIR N KIB    open / set_slice / predict / close N times: RSS may grow by
 *                                      at most KIB over them (and half of it over the second half)
 *   test_capi no_libtorch SET_DIR      an ONNX set runs without LibTorch ever mapped in the process
 *
 * Prints "N passed, N failed" and exits non-zero on any failure.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, sysconf */
#include <samfast.h>

#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int passed, failed;

#define EXPECT(cond, ...)                                 \
  do {                                                    \
    if (cond) {                                           \
      ++passed;                                           \
    } else {                                              \
      ++failed;                                           \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);         \
      printf(__VA_ARGS__);                                \
      printf("\n");                                       \
    }                                                     \
  } while (0)

/* The call returns `want` and the thread's last error contains `text`. */
#define EXPECT_STATUS(call, want, text)                                                                  \
  do {                                                                                                   \
    samfast_status got_ = (call);                                                                        \
    const char* message_ = samfast_last_error();                                                         \
    EXPECT(got_ == (want) && strstr(message_, (text)) != NULL, "%s -> %s \"%s\", want %s with \"%s\"", \
           #call, samfast_status_name(got_), message_, samfast_status_name(want), (text));               \
  } while (0)

/* A smooth synthetic slice: a bright disc on a ramp, values in 0..255. */
static float* make_slice(int height, int width, int channels, float shift) {
  float* pixels = malloc(sizeof(float) * height * width * channels);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      float dx = x - width * 0.45f - shift, dy = y - height * 0.55f;
      float v = 40.0f + 0.3f * x + (dx * dx + dy * dy < 0.04f * width * height ? 150.0f : 0.0f);
      for (int c = 0; c < channels; ++c) pixels[(y * width + x) * channels + c] = v + 5.0f * c;
    }
  return pixels;
}

static long rss_kib(void) {
  FILE* f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (!f) return -1;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
  fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int report(void) {
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

/* ---- api ------------------------------------------------------------------------------------ */

static int test_api(const char* dir) {
  EXPECT(strcmp(samfast_version(), SAMFAST_VERSION) == 0, "version %s", samfast_version());
  EXPECT(strcmp(samfast_status_name(SAMFAST_ERR_MANIFEST), "SAMFAST_ERR_MANIFEST") == 0, "status name");
  EXPECT(samfast_has_tensorrt() == 0 || samfast_has_tensorrt() == 1, "has_tensorrt");

  samfast_model* model = (samfast_model*)0x1;
  EXPECT_STATUS(samfast_open(NULL, NULL, &model), SAMFAST_ERR_INVALID_ARGUMENT, "export_dir is NULL");
  EXPECT(model == NULL, "out_model is reset to NULL on failure");
  EXPECT_STATUS(samfast_open(dir, NULL, NULL), SAMFAST_ERR_INVALID_ARGUMENT, "out_model is NULL");
  EXPECT_STATUS(samfast_open("/nonexistent/samfast-set", NULL, &model), SAMFAST_ERR_NOT_FOUND, "does not exist");
  EXPECT_STATUS(samfast_open(dir, "warp-drive", &model), SAMFAST_ERR_INVALID_ARGUMENT, "device \"warp-drive\"");
  samfast_status cuda = samfast_open(dir, "cuda:7", &model);
  EXPECT(cuda == SAMFAST_ERR_UNSUPPORTED && strstr(samfast_last_error(), "cuda:7"), "cuda:7 -> %s %s",
         samfast_status_name(cuda), samfast_last_error());
  samfast_close(NULL);
  EXPECT_STATUS(samfast_set_num_threads(0), SAMFAST_ERR_INVALID_ARGUMENT, "thread count");

  EXPECT_STATUS(samfast_open(dir, "cpu", &model), SAMFAST_OK, "");
  if (!model) return report();
  samfast_info info = SAMFAST_INFO_INIT();
  EXPECT_STATUS(samfast_get_info(model, &info), SAMFAST_OK, "");
  EXPECT_STATUS(samfast_get_info(NULL, &info), SAMFAST_ERR_INVALID_ARGUMENT, "model is NULL");
  EXPECT_STATUS(samfast_get_info(model, NULL), SAMFAST_ERR_INVALID_ARGUMENT, "out_info is NULL");
  int onnx = strcmp(info.format, "onnx") == 0;
  EXPECT((onnx || strcmp(info.format, "torchscript") == 0) &&
             strcmp(info.backend, onnx ? "openvino" : "libtorch") == 0 && strcmp(info.device, "cpu") == 0 &&
             strcmp(info.precision, "fp32") == 0,
         "info %s %s %s %s", info.format, info.backend, info.device, info.precision);
  EXPECT(info.cache_slices == SAMFAST_DEFAULT_CACHE_SLICES && info.slice_bytes >= sizeof(float) *
             (size_t)info.embedding_channels * info.embedding_height * info.embedding_width,
         "cache %d slices of %zu bytes", info.cache_slices, info.slice_bytes);
  EXPECT(samfast_has_backend("openvino") == 1 && samfast_has_backend("warp") == 0 && samfast_has_backend(NULL) == 0,
         "has_backend");
  EXPECT(info.input_size > 0 && info.low_res_size == 4 * info.embedding_height, "sizes %d %d", info.input_size,
         info.low_res_size);
  const int low = info.low_res_size;

  /* predict before any slice */
  float box[4] = {20, 30, 120, 110};
  samfast_prompt prompt = SAMFAST_PROMPT_INIT(.box = box);
  uint8_t* masks = malloc(3 * 200 * 150);
  float iou[3], *low_res = malloc(sizeof(float) * 3 * low * low);
  samfast_output out =
      SAMFAST_OUTPUT_INIT(.masks = masks, .masks_capacity = 3 * 200 * 150, .iou = iou, .iou_capacity = 3);
  EXPECT_STATUS(samfast_predict(model, &prompt, &out), SAMFAST_ERR_NO_SLICE, "no slice set");
  EXPECT_STATUS(samfast_get_slice(model, NULL, NULL, NULL, NULL), SAMFAST_ERR_NO_SLICE, "no slice set");

  /* set_slice arguments (a 150 x 200 slice: height 150, width 200) */
  float* pixels = make_slice(150, 200, 1, 0);
  EXPECT_STATUS(samfast_set_slice(NULL, pixels, 150, 200, 1, 1, 1), SAMFAST_ERR_INVALID_ARGUMENT, "model is NULL");
  EXPECT_STATUS(samfast_set_slice(model, NULL, 150, 200, 1, 1, 1), SAMFAST_ERR_INVALID_ARGUMENT, "pixels is NULL");
  EXPECT_STATUS(samfast_set_slice(model, pixels, 0, 200, 1, 1, 1), SAMFAST_ERR_INVALID_ARGUMENT, "slice size");
  EXPECT_STATUS(samfast_set_slice(model, pixels, 150, -3, 1, 1, 1), SAMFAST_ERR_INVALID_ARGUMENT, "slice size");
  EXPECT_STATUS(samfast_set_slice(model, pixels, 150, 200, 2, 1, 1), SAMFAST_ERR_INVALID_ARGUMENT,
                "channels must be 1 or 3");
  EXPECT_STATUS(samfast_set_slice(model, pixels, 150, 200, 1, 0, 1), SAMFAST_ERR_INVALID_ARGUMENT, "spacing");
  EXPECT_STATUS(samfast_set_slice(model, pixels, 150, 200, 1, 1, NAN), SAMFAST_ERR_INVALID_ARGUMENT, "spacing");
  pixels[777] = NAN;
  EXPECT_STATUS(samfast_set_slice(model, pixels, 150, 200, 1, 1, 1), SAMFAST_ERR_INVALID_ARGUMENT, "NaN");
  pixels[777] = 1.0f;
  EXPECT_STATUS(samfast_set_slice(model, pixels, 150, 200, 1, 0.8, 1.25), SAMFAST_OK, "");
  EXPECT_STATUS(samfast_get_slice(model, NULL, NULL, NULL, NULL), SAMFAST_OK, "");
  int h = 0, w = 0;
  double sy = 0, sx = 0;
  samfast_get_slice(model, &h, &w, &sy, &sx);
  EXPECT(h == 150 && w == 200 && sy == 0.8 && sx == 1.25, "get_slice %d %d %g %g", h, w, sy, sx);
  /* an argument error keeps the slice */
  EXPECT_STATUS(samfast_set_slice(model, pixels, 150, 200, 5, 1, 1), SAMFAST_ERR_INVALID_ARGUMENT, "channels");
  EXPECT_STATUS(samfast_get_slice(model, &h, NULL, NULL, NULL), SAMFAST_OK, "");

  /* prompts */
  EXPECT_STATUS(samfast_predict(model, NULL, &out), SAMFAST_ERR_INVALID_ARGUMENT, "prompt is NULL");
  EXPECT_STATUS(samfast_predict(model, &prompt, NULL), SAMFAST_ERR_INVALID_ARGUMENT, "out is NULL");
  samfast_prompt empty = SAMFAST_PROMPT_INIT();
  EXPECT_STATUS(samfast_predict(model, &empty, &out), SAMFAST_ERR_INVALID_ARGUMENT, "at least one prompt");
  float outside[4] = {150, 100, 201, 140};
  samfast_prompt p_out = SAMFAST_PROMPT_INIT(.box = outside);
  EXPECT_STATUS(samfast_predict(model, &p_out, &out), SAMFAST_ERR_OUT_OF_RANGE, "outside the 200x150 slice");
  float edge[4] = {0, 0, 200, 150}; /* the border itself is inside, as in the Python predictor */
  samfast_prompt p_edge = SAMFAST_PROMPT_INIT(.box = edge);
  EXPECT_STATUS(samfast_predict(model, &p_edge, &out), SAMFAST_OK, "");
  float inverted[4] = {120, 30, 20, 110};
  samfast_prompt p_inv = SAMFAST_PROMPT_INIT(.box = inverted);
  EXPECT_STATUS(samfast_predict(model, &p_inv, &out), SAMFAST_ERR_INVALID_ARGUMENT, "empty or inverted");
  float nan_box[4] = {20, NAN, 120, 110};
  samfast_prompt p_nan = SAMFAST_PROMPT_INIT(.box = nan_box);
  EXPECT_STATUS(samfast_predict(model, &p_nan, &out), SAMFAST_ERR_INVALID_ARGUMENT, "finite");
  float points[4] = {60, 70, 10, 149};
  int labels[2] = {1, 0};
  samfast_prompt p_pts = SAMFAST_PROMPT_INIT(.points = points, .labels = labels, .n_points = 2);
  EXPECT_STATUS(samfast_predict(model, &p_pts, &out), SAMFAST_OK, "");
  samfast_prompt p_nolab = SAMFAST_PROMPT_INIT(.points = points, .n_points = 2);
  EXPECT_STATUS(samfast_predict(model, &p_nolab, &out), SAMFAST_ERR_INVALID_ARGUMENT, "labels is NULL");
  samfast_prompt p_neg = SAMFAST_PROMPT_INIT(.points = points, .labels = labels, .n_points = -1);
  EXPECT_STATUS(samfast_predict(model, &p_neg, &out), SAMFAST_ERR_INVALID_ARGUMENT, "n_points");
  int bad_labels[2] = {1, 2};
  samfast_prompt p_badlab = SAMFAST_PROMPT_INIT(.points = points, .labels = bad_labels, .n_points = 2);
  EXPECT_STATUS(samfast_predict(model, &p_badlab, &out), SAMFAST_ERR_INVALID_ARGUMENT, "labels must be 1");
  float far_point[2] = {60, 151};
  samfast_prompt p_far = SAMFAST_PROMPT_INIT(.points = far_point, .labels = labels, .n_points = 1);
  EXPECT_STATUS(samfast_predict(model, &p_far, &out), SAMFAST_ERR_OUT_OF_RANGE, "point 0 (60, 151) lies outside");

  /* output capacities */
  samfast_output small = out;
  small.masks_capacity = 200 * 150 - 1;
  EXPECT_STATUS(samfast_predict(model, &prompt, &small), SAMFAST_ERR_BUFFER_TOO_SMALL, "need 30000");
  prompt.multimask = 1;
  small = out;
  small.masks_capacity = 200 * 150;
  EXPECT_STATUS(samfast_predict(model, &prompt, &small), SAMFAST_ERR_BUFFER_TOO_SMALL, "need 90000 (3 masks");
  EXPECT(small.n_masks == 3, "n_masks tells what is needed: %d", small.n_masks);
  small = out;
  small.iou_capacity = 2;
  EXPECT_STATUS(samfast_predict(model, &prompt, &small), SAMFAST_ERR_BUFFER_TOO_SMALL, "iou_capacity");
  small = out;
  small.low_res = low_res;
  small.low_res_capacity = (size_t)3 * low * low - 1;
  EXPECT_STATUS(samfast_predict(model, &prompt, &small), SAMFAST_ERR_BUFFER_TOO_SMALL, "low_res_capacity");
  small.masks = NULL;
  EXPECT_STATUS(samfast_predict(model, &prompt, &small), SAMFAST_ERR_INVALID_ARGUMENT, "out->masks is NULL");

  /* a good call: three masks, IoUs, low-res logits; one fed back as mask_input */
  out.low_res = low_res;
  out.low_res_capacity = (size_t)3 * low * low;
  EXPECT_STATUS(samfast_predict(model, &prompt, &out), SAMFAST_OK, "");
  EXPECT(out.n_masks == 3, "n_masks %d", out.n_masks);
  EXPECT(isfinite(iou[0]) && isfinite(iou[1]) && isfinite(iou[2]), "finite IoUs");
  int binary = 1;
  for (int i = 0; i < 3 * 200 * 150; ++i) binary &= masks[i] <= 1;
  EXPECT(binary, "masks hold 0 or 1");
  samfast_prompt feedback = SAMFAST_PROMPT_INIT(.box = box, .mask_input = low_res);
  out.iou_capacity = 1;
  EXPECT_STATUS(samfast_predict(model, &feedback, &out), SAMFAST_OK, "");
  EXPECT(out.n_masks == 1, "n_masks %d", out.n_masks);
  low_res[5] = INFINITY;
  EXPECT_STATUS(samfast_predict(model, &feedback, &out), SAMFAST_ERR_INVALID_ARGUMENT, "mask_input");
  samfast_prompt mask_only = SAMFAST_PROMPT_INIT(.mask_input = low_res + low * low);
  EXPECT_STATUS(samfast_predict(model, &mask_only, &out), SAMFAST_OK, "");

  /* three channels */
  float* rgb = make_slice(150, 200, 3, 0);
  EXPECT_STATUS(samfast_set_slice(model, rgb, 150, 200, 3, 1, 1), SAMFAST_OK, "");
  prompt.multimask = 0;
  EXPECT_STATUS(samfast_predict(model, &prompt, &out), SAMFAST_OK, "");
  /* a success clears the thread's last error */
  samfast_model* none = NULL;
  samfast_open(NULL, NULL, &none);
  EXPECT(samfast_last_error()[0] != '\0', "a failure leaves a message");
  EXPECT_STATUS(samfast_get_info(model, &info), SAMFAST_OK, "");
  EXPECT(samfast_last_error()[0] == '\0', "a success clears it: \"%s\"", samfast_last_error());
  samfast_close(model);
  free(rgb);
  free(pixels);
  free(masks);
  free(low_res);
  return report();
}

/* ---- threads -------------------------------------------------------------------------------- */

typedef struct {
  const char* dir;
  float shift;
  uint8_t mask[150 * 200];
  float iou;
  samfast_status status;
  char error_seen[256];
} job;

static void* run_job(void* arg) {
  job* j = arg;
  samfast_model* model = NULL;
  float* pixels = make_slice(150, 200, 1, j->shift);
  float box[4] = {20, 30, 120, 110};
  samfast_prompt prompt = SAMFAST_PROMPT_INIT(.box = box);
  samfast_output out =
      SAMFAST_OUTPUT_INIT(.masks = j->mask, .masks_capacity = sizeof j->mask, .iou = &j->iou, .iou_capacity = 1);
  j->status = samfast_open(j->dir, NULL, &model);
  if (j->status == SAMFAST_OK) j->status = samfast_set_slice(model, pixels, 150, 200, 1, 1, 1);
  for (int i = 0; i < 3 && j->status == SAMFAST_OK; ++i) j->status = samfast_predict(model, &prompt, &out);
  samfast_close(model);
  free(pixels);
  return NULL;
}

static void* fail_in_thread(void* arg) {
  job* j = arg;
  /* a fresh thread starts with no error, whatever other threads did */
  snprintf(j->error_seen, sizeof j->error_seen, "%s", samfast_last_error());
  j->status = samfast_open("/nonexistent/other-thread", NULL, &(samfast_model*){NULL});
  return NULL;
}

static int test_threads(const char* dir) {
  /* thread-local last error */
  samfast_model* model = NULL;
  samfast_open("/nonexistent/main-thread", NULL, &model);
  job other = {.dir = dir};
  pthread_t t;
  pthread_create(&t, NULL, fail_in_thread, &other);
  pthread_join(t, NULL);
  EXPECT(other.error_seen[0] == '\0', "new thread saw \"%s\"", other.error_seen);
  EXPECT(other.status == SAMFAST_ERR_NOT_FOUND, "other thread status %s", samfast_status_name(other.status));
  EXPECT(strstr(samfast_last_error(), "main-thread") != NULL, "main thread's error kept: \"%s\"",
         samfast_last_error());

  /* distinct handles on two threads at once give what each gives alone */
  static job alone[2], together[2];
  for (int i = 0; i < 2; ++i) {
    alone[i] = (job){.dir = dir, .shift = 25.0f * i};
    together[i] = alone[i];
    run_job(&alone[i]);
  }
  pthread_t threads[2];
  for (int i = 0; i < 2; ++i) pthread_create(&threads[i], NULL, run_job, &together[i]);
  for (int i = 0; i < 2; ++i) pthread_join(threads[i], NULL);
  for (int i = 0; i < 2; ++i) {
    EXPECT(alone[i].status == SAMFAST_OK && together[i].status == SAMFAST_OK, "job %d: %s / %s", i,
           samfast_status_name(alone[i].status), samfast_status_name(together[i].status));
    EXPECT(memcmp(alone[i].mask, together[i].mask, sizeof alone[i].mask) == 0, "job %d: same mask on a thread", i);
    EXPECT(fabsf(alone[i].iou - together[i].iou) < 1e-5f, "job %d: IoU %f vs %f", i, alone[i].iou,
           together[i].iou);
  }
  EXPECT(memcmp(alone[0].mask, alone[1].mask, sizeof alone[0].mask) != 0, "the two slices differ");
  return report();
}

/* ---- memory --------------------------------------------------------------------------------- */

static int cycle(const char* dir, const float* pixels, int height, int width, uint8_t* masks, float* iou) {
  samfast_model* model = NULL;
  float box[4] = {40, 50, 190, 170};
  float points[2] = {110, 120};
  int labels[1] = {1};
  samfast_prompt prompt =
      SAMFAST_PROMPT_INIT(.box = box, .points = points, .labels = labels, .n_points = 1, .multimask = 1);
  samfast_output out =
      SAMFAST_OUTPUT_INIT(.masks = masks, .masks_capacity = (size_t)3 * height * width, .iou = iou, .iou_capacity = 3);
  samfast_status s = samfast_open(dir, NULL, &model);
  if (s == SAMFAST_OK) s = samfast_set_slice(model, pixels, height, width, 1, 1, 1);
  if (s == SAMFAST_OK) s = samfast_predict(model, &prompt, &out);
  if (s != SAMFAST_OK) printf("cycle failed: %s %s\n", samfast_status_name(s), samfast_last_error());
  samfast_close(model);
  return s == SAMFAST_OK;
}

static long min_of(const long* values, int n) {
  long low = values[0];
  for (int i = 1; i < n; ++i) low = values[i] < low ? values[i] : low;
  return low;
}

static long max_of(const long* values, int n) {
  long high = values[0];
  for (int i = 1; i < n; ++i) high = values[i] > high ? values[i] : high;
  return high;
}

static int test_memory(const char* dir, int n, long limit) {
  const int height = 240, width = 240, warmup = 5;
  float* pixels = make_slice(height, width, 1, 0);
  uint8_t* masks = malloc((size_t)3 * height * width);
  long* rss = calloc((size_t)n, sizeof *rss);
  float iou[3];
  int done = 0;
  for (int i = 0; i < warmup; ++i) EXPECT(cycle(dir, pixels, height, width, masks, iou), "warm-up cycle %d", i);
  long start = rss_kib();
  for (; done < n; ++done) {
    if (!cycle(dir, pixels, height, width, masks, iou)) {
      EXPECT(0, "cycle %d", done);
      break;
    }
    rss[done] = rss_kib();
  }
  if (done == n && n >= 8) {
    /* Allocators (ONNX Runtime's arena, glibc's free lists) keep and return freed memory in steps
       of a few hundred KiB, up or down, so one reading against another is noise. A leak is steady:
       it lifts the lowest reading of the last quarter above the start and above every reading of
       the first quarter. A leak of the model (MBs) or of a slice's buffers (~1 MB) per cycle would
       exceed both limits many times over. */
    int quarter = n / 4;
    long first_high = max_of(rss, quarter), last_low = min_of(rss + n - quarter, quarter);
    printf("RSS after %d warm-up cycles %ld KiB; over %d more: first quarter at most %ld KiB, last quarter at "
           "least %ld KiB, end %ld KiB\n",
           warmup, start, n, first_high, last_low, rss[n - 1]);
    EXPECT(last_low - start <= limit, "RSS floor grew by %ld KiB over %d open/predict/close cycles (limit %ld KiB)",
           last_low - start, n, limit);
    EXPECT(last_low - first_high <= limit / 2,
           "RSS floor of the last quarter is %ld KiB above the first quarter's peak (limit %ld KiB)",
           last_low - first_high, limit / 2);
    printf("peak of this process: RSS %ld KiB\n", max_of(rss, n));
  } else {
    EXPECT(done == n && n >= 8, "%d of %d cycles ran (at least 8 needed to compare quarters)", done, n);
  }
  free(rss);
  free(masks);
  free(pixels);
  return report();
}


/* ---- options, cache, no_libtorch ------------------------------------------------------------ */

/* A samfast_options value: struct_size set, the fields named. */
#define OPTIONS(...) ((samfast_options)SAMFAST_OPTIONS_INIT(__VA_ARGS__))

static int open_status(const char* dir, samfast_options options, samfast_info* info) {
  samfast_model* model = NULL;
  samfast_status s = samfast_open_with(dir, &options, &model);
  if (s != SAMFAST_OK) return s; /* samfast_last_error() stays the open's until the next call */
  if (info) samfast_get_info(model, info);
  samfast_close(model);
  return s;
}

static int test_options(const char* dir) {
  samfast_info info = SAMFAST_INFO_INIT();
  samfast_model* model = (samfast_model*)0x1;
  EXPECT_STATUS(samfast_open_with(dir, NULL, &model), SAMFAST_OK, "");
  samfast_get_info(model, &info);
  samfast_close(model);
  int onnx = strcmp(info.format, "onnx") == 0;
  const char* own = onnx ? "openvino" : "libtorch";
  const char* other = onnx ? "libtorch" : "openvino";
  EXPECT_STATUS(open_status(dir, OPTIONS(.backend = own), NULL), SAMFAST_OK, "");
  EXPECT_STATUS(open_status(dir, OPTIONS(.backend = other), NULL), SAMFAST_ERR_INVALID_ARGUMENT,
                onnx ? "format is onnx, which runs on openvino" : "format is torchscript, which runs on libtorch");
  EXPECT_STATUS(open_status(dir, OPTIONS(.backend = "cuDNN"), NULL), SAMFAST_ERR_INVALID_ARGUMENT,
                "backend \"cuDNN\" unknown");
  EXPECT_STATUS(open_status(dir, OPTIONS(.precision = "int4"), NULL), SAMFAST_ERR_INVALID_ARGUMENT,
                "precision \"int4\" unknown");
  EXPECT_STATUS(open_status(dir, OPTIONS(.cache_slices = -1), NULL), SAMFAST_ERR_INVALID_ARGUMENT,
                "cache_slices must be between 1 and");
  EXPECT_STATUS(open_status(dir, OPTIONS(.threads = -2), NULL), SAMFAST_ERR_INVALID_ARGUMENT, "threads");
  EXPECT_STATUS(open_status(dir, OPTIONS(.cache_slices = 2, .threads = 1), &info), SAMFAST_OK, "");
  EXPECT(info.cache_slices == 2, "cache_slices %d", info.cache_slices);
  if (onnx) {
    EXPECT_STATUS(open_status(dir, OPTIONS(.device = "cuda"), NULL), SAMFAST_ERR_UNSUPPORTED,
                  "runs on the CPU only");
    /* bf16 where the CPU runs it natively, a clear refusal elsewhere */
    samfast_status s = open_status(dir, OPTIONS(.precision = "bf16"), &info);
    EXPECT((s == SAMFAST_OK && strcmp(info.precision, "bf16") == 0) ||
               (s == SAMFAST_ERR_UNSUPPORTED && strstr(samfast_last_error(), "no native bf16")),
           "bf16 -> %s \"%s\"", samfast_status_name(s), samfast_last_error());
    printf("bf16 on this CPU: %s\n", s == SAMFAST_OK ? "native, opened" : samfast_last_error());
  } else {
    EXPECT_STATUS(open_status(dir, OPTIONS(.precision = "bf16"), NULL), SAMFAST_ERR_UNSUPPORTED,
                  "bf16 is OpenVINO's");
  }
  return report();
}

typedef struct {
  uint8_t masks[3 * 150 * 200];
  float iou[3];
} answer;

static samfast_status ask(samfast_model* model, const float* pixels, answer* a) {
  float box[4] = {20, 30, 120, 110}, point[2] = {70, 70};
  int label = 1;
  samfast_prompt prompt =
      SAMFAST_PROMPT_INIT(.box = box, .points = point, .labels = &label, .n_points = 1, .multimask = 1);
  samfast_output out =
      SAMFAST_OUTPUT_INIT(.masks = a->masks, .masks_capacity = sizeof a->masks, .iou = a->iou, .iou_capacity = 3);
  samfast_status s = samfast_set_slice(model, pixels, 150, 200, 1, 1, 1);
  return s == SAMFAST_OK ? samfast_predict(model, &prompt, &out) : s;
}

static int same(const answer* a, const answer* b) {
  return memcmp(a->masks, b->masks, sizeof a->masks) == 0 && memcmp(a->iou, b->iou, sizeof a->iou) == 0;
}

static int test_cache(const char* dir) {
  /* Three slices through a 2-slice cache and through none: every answer equal to a fresh handle's. */
  float* slices[3] = {make_slice(150, 200, 1, 0), make_slice(150, 200, 1, 20), make_slice(150, 200, 1, 40)};
  static answer fresh[3], got;
  for (int i = 0; i < 3; ++i) {
    samfast_model* model = NULL;
    EXPECT_STATUS(samfast_open_with(dir, &OPTIONS(.cache_slices = 1), &model), SAMFAST_OK, "");
    EXPECT_STATUS(ask(model, slices[i], &fresh[i]), SAMFAST_OK, "");
    samfast_close(model);
  }
  EXPECT(!same(&fresh[0], &fresh[1]) && !same(&fresh[1], &fresh[2]), "the slices give different masks");
  samfast_model* model = NULL;
  EXPECT_STATUS(samfast_open_with(dir, &OPTIONS(.cache_slices = 2), &model), SAMFAST_OK, "");
  const int order[] = {0, 1, 0, 1, 2, 0, 2, 2, 1};  /* hits, and misses after eviction */
  for (size_t k = 0; k < sizeof order / sizeof order[0]; ++k) {
    int i = order[k];
    EXPECT_STATUS(ask(model, slices[i], &got), SAMFAST_OK, "");
    EXPECT(same(&got, &fresh[i]), "step %zu: slice %d through the cache differs from a fresh encoding", k, i);
  }
  /* same pixels, other geometry: not a cache hit */
  EXPECT_STATUS(samfast_set_slice(model, slices[2], 200, 150, 1, 1, 1), SAMFAST_OK, "");
  int h = 0, w = 0;
  samfast_get_slice(model, &h, &w, NULL, NULL);
  EXPECT(h == 200 && w == 150, "geometry %d x %d", h, w);
  samfast_close(model);
  for (int i = 0; i < 3; ++i) free(slices[i]);
  return report();
}

static int mapped(const char* name) {
  FILE* f = fopen("/proc/self/maps", "r");
  char line[4096];
  int found = 0;
  if (!f) return -1;
  while (fgets(line, sizeof line, f)) found |= strstr(line, name) != NULL;
  fclose(f);
  return found;
}

static int test_no_libtorch(const char* dir) {
  static answer a;
  float* pixels = make_slice(150, 200, 1, 0);
  samfast_model* model = NULL;
  EXPECT_STATUS(samfast_open(dir, NULL, &model), SAMFAST_OK, "");
  EXPECT_STATUS(ask(model, pixels, &a), SAMFAST_OK, "");
  samfast_close(model);
  EXPECT(mapped("libopenvino") == 1, "OpenVINO is mapped");
  EXPECT(mapped("libtorch") == 0 && mapped("libc10") == 0, "LibTorch was mapped into the process");
  free(pixels);
  return report();
}

/* ---- abi: struct_size and the version string (csrc/README.md, ABI policy) ------------------ */

_Static_assert(offsetof(samfast_info, struct_size) == 0, "struct_size leads samfast_info");
_Static_assert(offsetof(samfast_options, struct_size) == 0, "struct_size leads samfast_options");
_Static_assert(offsetof(samfast_prompt, struct_size) == 0, "struct_size leads samfast_prompt");
_Static_assert(offsetof(samfast_output, struct_size) == 0, "struct_size leads samfast_output");
_Static_assert(offsetof(samfast_volume_options, struct_size) == 0, "struct_size leads samfast_volume_options");

/* What a host compiled against a newer header passes: the known layout, then a field appended. */
typedef struct {
  samfast_info known;
  double appended;
} newer_info;
typedef struct {
  samfast_options known;
  double appended;
} newer_options;
typedef struct {
  samfast_prompt known;
  double appended;
} newer_prompt;
typedef struct {
  samfast_output known;
  double appended;
} newer_output;

static int test_abi(const char* dir) {
  /* one version string: the header's macro is what the library reports, and it is M.m.p */
  EXPECT(strcmp(samfast_version(), SAMFAST_VERSION) == 0, "samfast_version() %s, SAMFAST_VERSION %s",
         samfast_version(), SAMFAST_VERSION);
  unsigned major = 0, minor = 0, patch = 0;
  char end = 0;
  EXPECT(sscanf(samfast_version(), "%u.%u.%u%c", &major, &minor, &patch, &end) == 3, "version \"%s\" is not M.m.p",
         samfast_version());

  /* the initialisers set struct_size to the struct's size in this header, and name fields */
  samfast_info info = SAMFAST_INFO_INIT();
  samfast_options options = SAMFAST_OPTIONS_INIT(.cache_slices = 2);
  samfast_prompt empty = SAMFAST_PROMPT_INIT();
  samfast_output none = SAMFAST_OUTPUT_INIT();
  EXPECT(info.struct_size == sizeof(samfast_info), "SAMFAST_INFO_INIT: %zu", info.struct_size);
  EXPECT(options.struct_size == sizeof(samfast_options) && options.cache_slices == 2 && options.backend == NULL,
         "SAMFAST_OPTIONS_INIT: %zu", options.struct_size);
  EXPECT(empty.struct_size == sizeof(samfast_prompt) && empty.box == NULL, "SAMFAST_PROMPT_INIT: %zu",
         empty.struct_size);
  EXPECT(none.struct_size == sizeof(samfast_output) && none.masks == NULL, "SAMFAST_OUTPUT_INIT: %zu",
         none.struct_size);
  samfast_volume_options volume;
  memset(&volume, 0xff, sizeof volume);
  EXPECT_STATUS(samfast_volume_options_init(&volume, sizeof volume), SAMFAST_OK, "");
  EXPECT(volume.struct_size == sizeof(samfast_volume_options) && volume.margin_mm == 5.0 && volume.momentum == 0.7 &&
             volume.min_pixels == 10,
         "samfast_volume_options_init: size %zu, margin %g, momentum %g, min_pixels %d", volume.struct_size,
         volume.margin_mm, volume.momentum, volume.min_pixels);
  EXPECT_STATUS(samfast_volume_options_init(NULL, sizeof volume), SAMFAST_ERR_INVALID_ARGUMENT, "options is NULL");
  EXPECT_STATUS(samfast_volume_options_init(&volume, 0), SAMFAST_ERR_INVALID_ARGUMENT,
                "samfast_volume_options.struct_size is 0");
  EXPECT_STATUS(samfast_volume_options_init(&volume, sizeof(size_t)), SAMFAST_ERR_INVALID_ARGUMENT,
                "smaller than the oldest layout");

  /* options: 0 and too small refused, naming the struct; a newer caller's larger struct read */
  samfast_model* model = (samfast_model*)0x1;
  samfast_options zero = SAMFAST_OPTIONS_INIT();
  zero.struct_size = 0;
  EXPECT_STATUS(samfast_open_with(dir, &zero, &model), SAMFAST_ERR_INVALID_ARGUMENT,
                "samfast_options.struct_size is 0: initialise the struct with SAMFAST_OPTIONS_INIT()");
  EXPECT(model == NULL, "out_model is NULL after a refused struct");
  samfast_options small = SAMFAST_OPTIONS_INIT();
  small.struct_size = sizeof small - 1;
  EXPECT_STATUS(samfast_open_with(dir, &small, &model), SAMFAST_ERR_INVALID_ARGUMENT,
                "samfast_options.struct_size is");
  EXPECT(strstr(samfast_last_error(), "smaller than the oldest layout this libsamfast " SAMFAST_VERSION) != NULL,
         "message \"%s\"", samfast_last_error());
  newer_options newer = {.known = SAMFAST_OPTIONS_INIT(.cache_slices = 3), .appended = 1.0};
  newer.known.struct_size = sizeof newer;
  EXPECT_STATUS(samfast_open_with(dir, &newer.known, &model), SAMFAST_OK, "");
  if (samfast_last_error()[0] != '\0' || !model) return report();

  /* info: filled, its struct_size kept; a newer caller's appended field left as it was */
  newer_info described = {.known = SAMFAST_INFO_INIT(), .appended = 42.0};
  described.known.struct_size = sizeof described;
  EXPECT_STATUS(samfast_get_info(model, &described.known), SAMFAST_OK, "");
  const samfast_info* got = &described.known;
  EXPECT(got->struct_size == sizeof described && described.appended == 42.0, "newer info: size %zu, appended %g",
         got->struct_size, described.appended);
  EXPECT(got->model[0] && got->weights[0] && got->device[0] && got->normalization[0] &&
             (!strcmp(got->format, "onnx") || !strcmp(got->format, "torchscript")) && got->backend[0] &&
             !strcmp(got->precision, "fp32"),
         "info text: model \"%s\" weights \"%s\" format \"%s\" backend \"%s\" device \"%s\" precision \"%s\" "
         "normalization \"%s\"",
         got->model, got->weights, got->format, got->backend, got->device, got->precision, got->normalization);
  EXPECT(got->input_size > 0 && got->low_res_size > 0 && got->embedding_channels > 0 && got->embedding_height > 0 &&
             got->embedding_width > 0 && got->cache_slices == 3 && got->slice_bytes > 0,
         "info sizes: input %d low-res %d embedding %dx%dx%d cache %d slice %zu bytes (newer options' cache_slices "
         "3 read)",
         got->input_size, got->low_res_size, got->embedding_channels, got->embedding_height, got->embedding_width,
         got->cache_slices, got->slice_bytes);
  EXPECT_STATUS(samfast_get_info(model, &info), SAMFAST_OK, "");
  EXPECT(info.struct_size == sizeof info && !strcmp(info.model, got->model) && info.input_size == got->input_size,
         "info through SAMFAST_INFO_INIT");
  samfast_info unset = SAMFAST_INFO_INIT();
  unset.struct_size = 0;
  EXPECT_STATUS(samfast_get_info(model, &unset), SAMFAST_ERR_INVALID_ARGUMENT,
                "samfast_info.struct_size is 0: initialise the struct with SAMFAST_INFO_INIT()");
  EXPECT(unset.model[0] == '\0' && unset.input_size == 0, "a refused info is not written");

  /* prompt and output */
  float* pixels = make_slice(150, 200, 1, 0);
  EXPECT_STATUS(samfast_set_slice(model, pixels, 150, 200, 1, 1, 1), SAMFAST_OK, "");
  float box[4] = {20, 30, 120, 110}, iou = 0;
  static uint8_t mask[150 * 200], newer_mask[150 * 200];
  samfast_prompt prompt = SAMFAST_PROMPT_INIT(.box = box);
  samfast_output out = SAMFAST_OUTPUT_INIT(.masks = mask, .masks_capacity = sizeof mask, .iou = &iou,
                                           .iou_capacity = 1);
  EXPECT_STATUS(samfast_predict(model, &prompt, &out), SAMFAST_OK, "");
  EXPECT(out.n_masks == 1 && out.struct_size == sizeof out, "output: %d masks, size %zu", out.n_masks,
         out.struct_size);
  newer_prompt newer_p = {.known = SAMFAST_PROMPT_INIT(.box = box), .appended = 7.0};
  newer_p.known.struct_size = sizeof newer_p;
  float newer_iou = 0;
  newer_output newer_o = {.known = SAMFAST_OUTPUT_INIT(.masks = newer_mask, .masks_capacity = sizeof newer_mask,
                                                       .iou = &newer_iou, .iou_capacity = 1),
                          .appended = -3.0};
  newer_o.known.struct_size = sizeof newer_o;
  EXPECT_STATUS(samfast_predict(model, &newer_p.known, &newer_o.known), SAMFAST_OK, "");
  EXPECT(newer_o.known.n_masks == 1 && newer_o.known.struct_size == sizeof newer_o && newer_o.appended == -3.0,
         "newer output: %d masks, size %zu, appended %g", newer_o.known.n_masks, newer_o.known.struct_size,
         newer_o.appended);
  EXPECT(memcmp(mask, newer_mask, sizeof mask) == 0 && iou == newer_iou,
         "a newer caller's structs give the same answer");

  samfast_prompt p_zero = prompt;
  p_zero.struct_size = 0;
  EXPECT_STATUS(samfast_predict(model, &p_zero, &out), SAMFAST_ERR_INVALID_ARGUMENT,
                "samfast_prompt.struct_size is 0: initialise the struct with SAMFAST_PROMPT_INIT()");
  samfast_prompt p_small = prompt;
  p_small.struct_size = sizeof(size_t);
  EXPECT_STATUS(samfast_predict(model, &p_small, &out), SAMFAST_ERR_INVALID_ARGUMENT,
                "samfast_prompt.struct_size is");
  samfast_output o_zero = out;
  o_zero.struct_size = 0;
  o_zero.n_masks = -1;
  EXPECT_STATUS(samfast_predict(model, &prompt, &o_zero), SAMFAST_ERR_INVALID_ARGUMENT,
                "samfast_output.struct_size is 0: initialise the struct with SAMFAST_OUTPUT_INIT()");
  EXPECT(o_zero.n_masks == -1, "a refused output is not written: n_masks %d", o_zero.n_masks);
  samfast_output o_small = out;
  o_small.struct_size = offsetof(samfast_output, n_masks);
  EXPECT_STATUS(samfast_predict(model, &prompt, &o_small), SAMFAST_ERR_INVALID_ARGUMENT,
                "smaller than the oldest layout");

  /* volume options: refused before anything runs, with out_mask cleared as for any refusal */
  samfast_volume_options v_zero = volume;
  v_zero.struct_size = 0;
  float box3d[6] = {20, 30, 0, 120, 110, 1};
  uint8_t* volume_mask = malloc(2 * sizeof mask);
  memset(volume_mask, 7, 2 * sizeof mask);
  float* voxels = malloc(2 * sizeof(float) * 150 * 200);
  memcpy(voxels, pixels, sizeof(float) * 150 * 200);
  memcpy(voxels + 150 * 200, pixels, sizeof(float) * 150 * 200);
  EXPECT_STATUS(samfast_segment_volume(model, voxels, 2, 150, 200, 1, 1, 1, box3d, &v_zero, volume_mask, NULL, NULL),
                SAMFAST_ERR_INVALID_ARGUMENT, "samfast_volume_options.struct_size is 0");
  int cleared = 1;
  for (size_t i = 0; i < 2 * sizeof mask; ++i) cleared &= volume_mask[i] == 0;
  EXPECT(cleared, "out_mask is all zero after a refused samfast_volume_options");
  free(voxels);
  free(volume_mask);
  free(pixels);
  samfast_close(model);
  return report();
}

int main(int argc, char** argv) {
  if (argc >= 3 && !strcmp(argv[1], "api")) return test_api(argv[2]);
  if (argc >= 3 && !strcmp(argv[1], "abi")) return test_abi(argv[2]);
  if (argc >= 3 && !strcmp(argv[1], "threads")) return test_threads(argv[2]);
  if (argc >= 3 && !strcmp(argv[1], "options")) return test_options(argv[2]);
  if (argc >= 3 && !strcmp(argv[1], "cache")) return test_cache(argv[2]);
  if (argc >= 3 && !strcmp(argv[1], "no_libtorch")) return test_no_libtorch(argv[2]);
  if (argc >= 5 && !strcmp(argv[1], "memory")) return test_memory(argv[2], atoi(argv[3]), atol(argv[4]));
  fprintf(stderr, "usage: %s api|abi|options|cache|threads|no_libtorch SET_DIR | memory SET_DIR N KIB\n", argv[0]);
  return 2;
}
