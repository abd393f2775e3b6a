/* Face pipeline pre- and post-processing for the board: see face_proc.h for the contract.
 * Every formula here has its twin in the Python modules of edgetvm.face; keep the operation order identical (it
 * decides float32 rounding) when changing either side. */
#include "face_proc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int kRetinaSteps[3] = {8, 16, 32};
static const int kRetinaMinSizes[3][2] = {{16, 32}, {64, 128}, {256, 512}};
static const float kRetinaVariance0 = 0.1f;
static const float kRetinaVariance1 = 0.2f;
static const int kYunetStrides[3] = {8, 16, 32};

/* ArcFace 112x112 template: right eye, left eye, nose, right and left mouth corner. */
static const float kArcfaceTemplate[10] = {38.2946f, 51.6963f, 73.5318f, 51.5014f, 56.0252f,
                                           71.7366f, 41.5493f, 92.3655f, 70.7299f, 92.2041f};

void face_fit_size(int w, int h, int in_w, int in_h, int* new_w, int* new_h) {
  double rx = (double)in_w / w, ry = (double)in_h / h;
  double ratio = rx < ry ? rx : ry;
  int nw = (int)floor(w * ratio + 0.5), nh = (int)floor(h * ratio + 0.5);
  nw = nw < 1 ? 1 : (nw > in_w ? in_w : nw);
  nh = nh < 1 ? 1 : (nh > in_h ? in_h : nh);
  *new_w = nw;
  *new_h = nh;
}

/* Source taps along one axis: src = (dst + 0.5) * in / out - 0.5, clamped to [0, in - 1]. */
static void axis_tap(int dst, int in_size, float scale, int* i0, int* i1, float* frac) {
  float src = ((float)dst + 0.5f) * scale - 0.5f;
  if (src < 0.0f) src = 0.0f;
  if (src > (float)(in_size - 1)) src = (float)(in_size - 1);
  int lo = (int)floorf(src);
  *i0 = lo;
  *i1 = lo + 1 < in_size ? lo + 1 : in_size - 1;
  *frac = src - (float)lo;
}

static inline float lerp2(float p00, float p01, float p10, float p11, float fx, float fy) {
  float top = p00 * (1.0f - fx) + p01 * fx;
  float bottom = p10 * (1.0f - fx) + p11 * fx;
  return top * (1.0f - fy) + bottom * fy;
}

/* One body for every sample type: the taps and the lerp order are what host and board must share. */
#define FACE_RESIZE_BILINEAR(name, sample_t)                                                                     \
  void name(const sample_t* src, int w, int h, int channels, float* dst, int out_w, int out_h) {                 \
    float sx = (float)w / (float)out_w, sy = (float)h / (float)out_h;                                          \
    for (int y = 0; y < out_h; ++y) {                                                                          \
      int y0, y1;                                                                                              \
      float fy;                                                                                                \
      axis_tap(y, h, sy, &y0, &y1, &fy);                                                                       \
      for (int x = 0; x < out_w; ++x) {                                                                        \
        int x0, x1;                                                                                            \
        float fx;                                                                                              \
        axis_tap(x, w, sx, &x0, &x1, &fx);                                                                     \
        for (int c = 0; c < channels; ++c) {                                                                   \
          dst[((size_t)y * out_w + x) * channels + c] =                                                        \
              lerp2(src[((size_t)y0 * w + x0) * channels + c], src[((size_t)y0 * w + x1) * channels + c],      \
                    src[((size_t)y1 * w + x0) * channels + c], src[((size_t)y1 * w + x1) * channels + c], fx, fy); \
        }                                                                                                      \
      }                                                                                                        \
    }                                                                                                          \
  }

FACE_RESIZE_BILINEAR(face_resize_bilinear, uint8_t)
FACE_RESIZE_BILINEAR(face_resize_bilinear_f32, float)

void face_letterbox(const uint8_t* rgb, int w, int h, int in_w, int in_h, const float mean_bgr[3], float* nchw,
                    face_letterbox_info* info) {
  int new_w, new_h;
  face_fit_size(w, h, in_w, in_h, &new_w, &new_h);
  size_t plane = (size_t)in_w * in_h;
  memset(nchw, 0, 3 * plane * sizeof(float));
  float sx = (float)w / (float)new_w, sy = (float)h / (float)new_h;
  for (int y = 0; y < new_h; ++y) {
    int y0, y1;
    float fy;
    axis_tap(y, h, sy, &y0, &y1, &fy);
    for (int x = 0; x < new_w; ++x) {
      int x0, x1;
      float fx;
      axis_tap(x, w, sx, &x0, &x1, &fx);
      for (int c = 0; c < 3; ++c) {
        int rgb_index = 2 - c; /* output channel c is BGR */
        float v = lerp2(rgb[((size_t)y0 * w + x0) * 3 + rgb_index], rgb[((size_t)y0 * w + x1) * 3 + rgb_index],
                        rgb[((size_t)y1 * w + x0) * 3 + rgb_index], rgb[((size_t)y1 * w + x1) * 3 + rgb_index],
                        fx, fy);
        nchw[c * plane + (size_t)y * in_w + x] = v - mean_bgr[c];
      }
    }
  }
  if (info) {
    info->resized_w = new_w;
    info->resized_h = new_h;
    info->scale_x = (float)((double)w / new_w);
    info->scale_y = (float)((double)h / new_h);
  }
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

int face_retinaface_num_priors(int in_w, int in_h) {
  int n = 0;
  for (int k = 0; k < 3; ++k) n += ceil_div(in_w, kRetinaSteps[k]) * ceil_div(in_h, kRetinaSteps[k]) * 2;
  return n;
}

int face_decode_retinaface(const float* loc, const float* conf, const float* landmarks, int in_w, int in_h,
                           float score_threshold, face_det* out, int capacity) {
  int count = 0, index = 0;
  for (int k = 0; k < 3; ++k) {
    int step = kRetinaSteps[k];
    int rows = ceil_div(in_h, step), cols = ceil_div(in_w, step);
    for (int i = 0; i < rows; ++i) {
      for (int j = 0; j < cols; ++j) {
        for (int s = 0; s < 2; ++s, ++index) {
          float score = conf[index * 2 + 1];
          if (!(score > score_threshold)) continue;
          if (count >= capacity) return count;
          float pcx = (float)(((double)j + 0.5) * step / in_w);
          float pcy = (float)(((double)i + 0.5) * step / in_h);
          float pw = (float)((double)kRetinaMinSizes[k][s] / in_w);
          float ph = (float)((double)kRetinaMinSizes[k][s] / in_h);
          const float* d = loc + (size_t)index * 4;
          float cx = pcx + d[0] * kRetinaVariance0 * pw;
          float cy = pcy + d[1] * kRetinaVariance0 * ph;
          float bw = pw * expf(d[2] * kRetinaVariance1);
          float bh = ph * expf(d[3] * kRetinaVariance1);
          face_det* f = &out[count++];
          f->box[0] = (cx - bw * 0.5f) * (float)in_w;
          f->box[1] = (cy - bh * 0.5f) * (float)in_h;
          f->box[2] = (cx + bw * 0.5f) * (float)in_w;
          f->box[3] = (cy + bh * 0.5f) * (float)in_h;
          f->score = score;
          const float* l = landmarks + (size_t)index * 10;
          for (int p = 0; p < 5; ++p) {
            f->landmarks[2 * p] = (pcx + l[2 * p] * kRetinaVariance0 * pw) * (float)in_w;
            f->landmarks[2 * p + 1] = (pcy + l[2 * p + 1] * kRetinaVariance0 * ph) * (float)in_h;
          }
        }
      }
    }
  }
  return count;
}

static float clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

int face_decode_yunet(const float* const outputs[12], int in_w, int in_h, float score_threshold, face_det* out,
                      int capacity) {
  int count = 0;
  for (int i = 0; i < 3; ++i) {
    int stride = kYunetStrides[i];
    int cols = in_w / stride, rows = in_h / stride;
    const float* cls = outputs[i];
    const float* obj = outputs[3 + i];
    const float* bbox = outputs[6 + i];
    const float* kps = outputs[9 + i];
    float s = (float)stride;
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        int idx = r * cols + c;
        float score = sqrtf(clamp01(cls[idx]) * clamp01(obj[idx]));
        if (!(score > score_threshold)) continue;
        if (count >= capacity) return count;
        const float* b = bbox + (size_t)idx * 4;
        float cx = ((float)c + b[0]) * s, cy = ((float)r + b[1]) * s;
        float bw = expf(b[2]) * s, bh = expf(b[3]) * s;
        face_det* f = &out[count++];
        f->box[0] = cx - bw * 0.5f;
        f->box[1] = cy - bh * 0.5f;
        f->box[2] = cx + bw * 0.5f;
        f->box[3] = cy + bh * 0.5f;
        f->score = score;
        const float* k = kps + (size_t)idx * 10;
        for (int p = 0; p < 5; ++p) {
          f->landmarks[2 * p] = ((float)c + k[2 * p]) * s;
          f->landmarks[2 * p + 1] = ((float)r + k[2 * p + 1]) * s;
        }
      }
    }
  }
  return count;
}

static float box_area(const float* b) {
  float w = b[2] - b[0], h = b[3] - b[1];
  return (w > 0.0f ? w : 0.0f) * (h > 0.0f ? h : 0.0f);
}

float face_box_iou(const float* a, const float* b) {
  float ix1 = a[0] > b[0] ? a[0] : b[0], iy1 = a[1] > b[1] ? a[1] : b[1];
  float ix2 = a[2] < b[2] ? a[2] : b[2], iy2 = a[3] < b[3] ? a[3] : b[3];
  float iw = ix2 - ix1, ih = iy2 - iy1;
  float inter = (iw > 0.0f ? iw : 0.0f) * (ih > 0.0f ? ih : 0.0f);
  float uni = box_area(a) + box_area(b) - inter;
  return uni > 0.0f ? inter / uni : 0.0f;
}

/* Stable merge sort by decreasing score: ties keep anchor order, as numpy's stable argsort. */
static void sort_by_score(face_det* faces, face_det* tmp, int n) {
  if (n < 2) return;
  int mid = n / 2;
  sort_by_score(faces, tmp, mid);
  sort_by_score(faces + mid, tmp, n - mid);
  int i = 0, j = mid, k = 0;
  while (i < mid && j < n) tmp[k++] = faces[j].score > faces[i].score ? faces[j++] : faces[i++];
  while (i < mid) tmp[k++] = faces[i++];
  while (j < n) tmp[k++] = faces[j++];
  memcpy(faces, tmp, (size_t)n * sizeof(face_det));
}

int face_nms(face_det* faces, int n, float iou_threshold, int max_keep) {
  if (n <= 0) return 0;
  face_det* tmp = (face_det*)malloc((size_t)n * sizeof(face_det));
  unsigned char* suppressed = (unsigned char*)calloc((size_t)n, 1);
  if (!tmp || !suppressed) {
    free(tmp);
    free(suppressed);
    return -1;
  }
  sort_by_score(faces, tmp, n);
  int kept = 0;
  for (int i = 0; i < n && kept < max_keep; ++i) {
    if (suppressed[i]) continue;
    tmp[kept++] = faces[i];
    for (int j = i + 1; j < n; ++j) {
      if (!suppressed[j] && face_box_iou(faces[i].box, faces[j].box) > iou_threshold) suppressed[j] = 1;
    }
  }
  memcpy(faces, tmp, (size_t)kept * sizeof(face_det));
  free(tmp);
  free(suppressed);
  return kept;
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

void face_to_image(face_det* faces, int n, const face_letterbox_info* info, int image_w, int image_h) {
  for (int i = 0; i < n; ++i) {
    face_det* f = &faces[i];
    f->box[0] = clampf(f->box[0] * info->scale_x, 0.0f, (float)image_w);
    f->box[1] = clampf(f->box[1] * info->scale_y, 0.0f, (float)image_h);
    f->box[2] = clampf(f->box[2] * info->scale_x, 0.0f, (float)image_w);
    f->box[3] = clampf(f->box[3] * info->scale_y, 0.0f, (float)image_h);
    for (int p = 0; p < 5; ++p) {
      f->landmarks[2 * p] *= info->scale_x;
      f->landmarks[2 * p + 1] *= info->scale_y;
    }
  }
}

int face_alignment_matrix(const float landmarks[10], float matrix[6]) {
  double sm[2] = {0, 0}, dm[2] = {0, 0};
  for (int p = 0; p < 5; ++p) {
    sm[0] += landmarks[2 * p] / 5.0;
    sm[1] += landmarks[2 * p + 1] / 5.0;
    dm[0] += kArcfaceTemplate[2 * p] / 5.0;
    dm[1] += kArcfaceTemplate[2 * p + 1] / 5.0;
  }
  double norm = 0, dot = 0, cross = 0;
  for (int p = 0; p < 5; ++p) {
    double px = landmarks[2 * p] - sm[0], py = landmarks[2 * p + 1] - sm[1];
    double qx = kArcfaceTemplate[2 * p] - dm[0], qy = kArcfaceTemplate[2 * p + 1] - dm[1];
    norm += px * px + py * py;
    dot += px * qx + py * qy;
    cross += px * qy - py * qx;
  }
  if (norm <= 1e-12) return -1;
  double a = dot / norm, b = cross / norm;
  matrix[0] = (float)a;
  matrix[1] = (float)-b;
  matrix[2] = (float)(dm[0] - (a * sm[0] - b * sm[1]));
  matrix[3] = (float)b;
  matrix[4] = (float)a;
  matrix[5] = (float)(dm[1] - (b * sm[0] + a * sm[1]));
  return 0;
}

int face_warp_affine(const uint8_t* rgb, int w, int h, const float matrix[6], int out_w, int out_h, float* out) {
  double a = matrix[0], b = matrix[1], c = matrix[2], d = matrix[3], e = matrix[4], f = matrix[5];
  double det = a * e - b * d;
  if (fabs(det) < 1e-12) return -1;
  float i00 = (float)(e / det), i01 = (float)(-b / det), i02 = (float)((b * f - c * e) / det);
  float i10 = (float)(-d / det), i11 = (float)(a / det), i12 = (float)((c * d - a * f) / det);
  for (int v = 0; v < out_h; ++v) {
    for (int u = 0; u < out_w; ++u) {
      float sx = i00 * (float)u + i01 * (float)v + i02;
      float sy = i10 * (float)u + i11 * (float)v + i12;
      float x0f = floorf(sx), y0f = floorf(sy);
      float fx = sx - x0f, fy = sy - y0f;
      int x0 = (int)x0f, y0 = (int)y0f;
      for (int ch = 0; ch < 3; ++ch) {
        float t[4];
        for (int k = 0; k < 4; ++k) {
          int xx = x0 + (k & 1), yy = y0 + (k >> 1);
          t[k] = (xx >= 0 && xx < w && yy >= 0 && yy < h) ? (float)rgb[((size_t)yy * w + xx) * 3 + ch] : 0.0f;
        }
        out[((size_t)v * out_w + u) * 3 + ch] = lerp2(t[0], t[1], t[2], t[3], fx, fy);
      }
    }
  }
  return 0;
}

void face_recognizer_input(const float* crop_hwc, int normalize, float* nchw) {
  const int n = FACE_ALIGNED_SIZE * FACE_ALIGNED_SIZE;
  for (int i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) {
      float v = crop_hwc[i * 3 + c];
      nchw[c * n + i] = normalize ? (v - 127.5f) / 128.0f : v;
    }
  }
}

void face_l2_normalize(float* v, int n) {
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += (double)v[i] * v[i];
  double norm = sqrt(sum);
  if (norm < 1e-12) norm = 1e-12;
  for (int i = 0; i < n; ++i) v[i] = (float)(v[i] / norm);
}

float face_cosine(const float* a, const float* b, int n) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < n; ++i) {
    ab += (double)a[i] * b[i];
    aa += (double)a[i] * a[i];
    bb += (double)b[i] * b[i];
  }
  double den = sqrt(aa * bb);
  return (float)(ab / (den > 1e-12 ? den : 1e-12));
}

/* Next header integer of a PNM file, skipping whitespace and # comments. */
static int pnm_int(FILE* fp, int* value) {
  int ch;
  do {
    ch = fgetc(fp);
    if (ch == '#') {
      while (ch != '\n' && ch != EOF) ch = fgetc(fp);
    }
  } while (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r');
  if (ch < '0' || ch > '9') return -1;
  long v = 0;
  while (ch >= '0' && ch <= '9') {
    v = v * 10 + (ch - '0');
    if (v > 1 << 20) return -1;
    ch = fgetc(fp);
  }
  *value = (int)v; /* the single whitespace after maxval is consumed here */
  return 0;
}

uint8_t* face_read_pnm(const char* path, int* w, int* h) {
  FILE* fp = fopen(path, "rb");
  if (!fp) return NULL;
  char magic[2];
  int width, height, maxval;
  if (fread(magic, 1, 2, fp) != 2 || magic[0] != 'P' || (magic[1] != '6' && magic[1] != '5') ||
      pnm_int(fp, &width) || pnm_int(fp, &height) || pnm_int(fp, &maxval) || maxval != 255 || width < 2 ||
      height < 2) {
    fclose(fp);
    return NULL;
  }
  int channels = magic[1] == '6' ? 3 : 1;
  size_t pixels = (size_t)width * height;
  uint8_t* rgb = (uint8_t*)malloc(pixels * 3);
  if (!rgb) {
    fclose(fp);
    return NULL;
  }
  if (fread(rgb, channels, pixels, fp) != pixels) {
    free(rgb);
    fclose(fp);
    return NULL;
  }
  fclose(fp);
  if (channels == 1) {
    for (size_t i = pixels; i-- > 0;) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = rgb[i];
  }
  *w = width;
  *h = height;
  return rgb;
}
