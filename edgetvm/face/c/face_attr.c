/* Face attributes on the board: see face_attr.h. */
#include "face_attr.h"

#include <math.h>
#include <stdlib.h>

#include "face_proc.h"

static const double DLIB_TEMPLATE[5][2] = {
    {0.8595674595992, 0.2134981538014}, {0.6460604764104, 0.2289674387677}, {0.1205750620789, 0.2137274526848},
    {0.3340850613712, 0.2290642403242}, {0.4901123135679, 0.6277975316475}};
static const int MESH_FOR_DLIB[5] = {263, 398, 33, 173, 2};
static const float DLIB_MEAN[3] = {122.781998f, 117.000999f, 104.297997f};

/* The 2-D least-squares similarity src -> dst, [[a, -b, tx], [b, a, ty]] (face_proc.c's closed form). */
static int similarity(const double src[5][2], const double dst[5][2], double m[6]) {
  double sm[2] = {0, 0}, dm[2] = {0, 0};
  for (int i = 0; i < 5; ++i)
    for (int k = 0; k < 2; ++k) {
      sm[k] += src[i][k] / 5;
      dm[k] += dst[i][k] / 5;
    }
  double num_a = 0, num_b = 0, norm = 0;
  for (int i = 0; i < 5; ++i) {
    double px = src[i][0] - sm[0], py = src[i][1] - sm[1], qx = dst[i][0] - dm[0], qy = dst[i][1] - dm[1];
    num_a += px * qx + py * qy;
    num_b += px * qy - py * qx;
    norm += px * px + py * py;
  }
  if (norm <= 1e-12) return -1;
  double a = num_a / norm, b = num_b / norm;
  m[0] = a, m[1] = -b, m[2] = dm[0] - (a * sm[0] - b * sm[1]);
  m[3] = b, m[4] = a, m[5] = dm[1] - (b * sm[0] + a * sm[1]);
  return 0;
}

int face_dlib_chip(const uint8_t* rgb, int w, int h, const float* points, int size, uint8_t* chip) {
  double dst[5][2], src[5][2], m[6];
  for (int i = 0; i < 5; ++i)
    for (int k = 0; k < 2; ++k) dst[i][k] = points[MESH_FOR_DLIB[i] * 3 + k];
  for (int i = 0; i < 5; ++i)
    for (int k = 0; k < 2; ++k) src[i][k] = (0.2 + DLIB_TEMPLATE[i][k]) / 1.4 * size;
  if (similarity(src, dst, m)) return -1;
  /* Image pixels per chip pixel: dlib halves the image until that is at most 2. */
  double shrink = sqrt(fabs(m[0] * m[4] - m[1] * m[3]));
  int factor = 1;
  while (shrink / factor > 2) factor *= 2;
  int big = size * factor;
  for (int i = 0; i < 5; ++i)
    for (int k = 0; k < 2; ++k) src[i][k] = (0.2 + DLIB_TEMPLATE[i][k]) / 1.4 * big;
  if (similarity(src, dst, m)) return -1;
  /* Invert chip -> image into image -> chip, the map face_warp_affine takes. */
  double det = m[0] * m[4] - m[1] * m[3];
  float inv[6] = {(float)(m[4] / det), (float)(-m[1] / det), (float)((m[1] * m[5] - m[2] * m[4]) / det),
                  (float)(-m[3] / det), (float)(m[0] / det), (float)((m[2] * m[3] - m[0] * m[5]) / det)};
  float* sampled = (float*)malloc((size_t)big * big * 3 * sizeof(float));
  if (!sampled) return -1;
  if (face_warp_affine(rgb, w, h, inv, big, big, sampled) != 0) {
    free(sampled);
    return -1;
  }
  const float area = (float)(factor * factor);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      for (int c = 0; c < 3; ++c) {
        float sum = 0.0f;
        for (int dy = 0; dy < factor; ++dy)
          for (int dx = 0; dx < factor; ++dx)
            sum += sampled[((size_t)(y * factor + dy) * big + (x * factor + dx)) * 3 + c];
        float v = sum / area;
        chip[((size_t)y * size + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
  free(sampled);
  return 0;
}

void face_chip_input(const uint8_t* chip, int size, float* nchw) {
  const int n = size * size;
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) nchw[c * n + i] = ((float)chip[i * 3 + c] - DLIB_MEAN[c]) * (1.0f / 256.0f);
}

float face_age_expectation(const float* probabilities) {
  float total = 0.0f;
  for (int i = 0; i < FACE_AGE_CLASSES; ++i) total += (i == 0 ? 0.25f : (float)i) * probabilities[i];
  return total;
}
