/* Person segmentation pre- and post-processing for the board: see face_seg.h for the contract.
 * The twin of edgetvm/face/segmentation.py: keep the operation order identical on both sides. */
#include "face_seg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "face_proc.h"

void face_seg_input(const uint8_t* rgb, int w, int h, int in_w, int in_h, float* nhwc) {
  /* (x - 0) * float32(1 / 255), as the Python side applies its preprocess mean and scale. */
  const float scale = (float)(1.0 / 255.0);
  size_t n = (size_t)in_w * in_h * 3;
  face_resize_bilinear(rgb, w, h, 3, nhwc, in_w, in_h);
  for (size_t i = 0; i < n; ++i) nhwc[i] = (nhwc[i] - 0.0f) * scale;
}

void face_seg_mask(const float* prob, int in_w, int in_h, int w, int h, float* mask) {
  size_t n = (size_t)w * h;
  face_resize_bilinear_f32(prob, in_w, in_h, 1, mask, w, h);
  for (size_t i = 0; i < n; ++i) mask[i] = mask[i] < 0.0f ? 0.0f : (mask[i] > 1.0f ? 1.0f : mask[i]);
}

float face_seg_person_fraction(const float* mask, int w, int h, float threshold) {
  size_t n = (size_t)w * h, person = 0;
  for (size_t i = 0; i < n; ++i) person += mask[i] >= threshold;
  return n ? (float)((double)person / (double)n) : 0.0f;
}

static uint8_t blend(uint8_t fg, uint8_t bg, float m) {
  float v = rintf(m * (float)fg + (1.0f - m) * (float)bg);
  return (uint8_t)(v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v));
}

void face_seg_composite(const uint8_t* rgb, const float* mask, const uint8_t* background, int w, int h,
                        uint8_t* out) {
  size_t n = (size_t)w * h;
  for (size_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) out[i * 3 + c] = blend(rgb[i * 3 + c], background[i * 3 + c], mask[i]);
}

void face_seg_composite_color(const uint8_t* rgb, const float* mask, const uint8_t color[3], int w, int h,
                              uint8_t* out) {
  size_t n = (size_t)w * h;
  for (size_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) out[i * 3 + c] = blend(rgb[i * 3 + c], color[c], mask[i]);
}

void face_seg_mask_to_grey(const float* mask, int w, int h, uint8_t* grey) {
  size_t n = (size_t)w * h;
  for (size_t i = 0; i < n; ++i) {
    float v = rintf(mask[i] * 255.0f);
    grey[i] = (uint8_t)(v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v));
  }
}

int face_write_pnm(const char* path, const uint8_t* pixels, int w, int h, int channels) {
  if (channels != 1 && channels != 3) return -1;
  FILE* f = fopen(path, "wb");
  if (!f) return -1;
  size_t count = (size_t)w * h * channels;
  int ok = fprintf(f, "P%d\n%d %d\n255\n", channels == 1 ? 5 : 6, w, h) > 0 && fwrite(pixels, 1, count, f) == count;
  return fclose(f) == 0 && ok ? 0 : -1;
}
