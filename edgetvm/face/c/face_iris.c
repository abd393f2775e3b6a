/* Iris on the board: see face_iris.h. */
#include "face_iris.h"

#include <math.h>
#include <string.h>

static const int EYE_CORNERS[FACE_IRIS_EYES][2] = {{33, 133}, {362, 263}};

void face_iris_roi(const float* points, int eye, face_roi* roi) {
  const float *a = points + EYE_CORNERS[eye][0] * 3, *b = points + EYE_CORNERS[eye][1] * 3;
  double dx = (double)b[0] - a[0], dy = (double)b[1] - a[1];
  roi->cx = (float)(((double)a[0] + b[0]) / 2);
  roi->cy = (float)(((double)a[1] + b[1]) / 2);
  roi->size = (float)(FACE_IRIS_ROI_SCALE * fmax(fabs(dx), fabs(dy)));
  roi->angle = (float)atan2(dy, dx);
}

int face_iris_input(const uint8_t* rgb, int w, int h, const face_roi* roi, int eye, float* nhwc) {
  float matrix[6];
  /* Eye corners that coincide (a collapsed mesh) leave no crop; NaN sizes fail this too. */
  if ((eye != FACE_IRIS_RIGHT && eye != FACE_IRIS_LEFT) || !(roi->size >= 1e-3f && roi->size < 1e9f)) return -1;
  face_mesh_roi_matrix(roi, FACE_IRIS_SIZE, matrix);
  if (face_warp_affine(rgb, w, h, matrix, FACE_IRIS_SIZE, FACE_IRIS_SIZE, nhwc) != 0) return -1;
  if (eye == FACE_IRIS_LEFT) {
    for (int y = 0; y < FACE_IRIS_SIZE; ++y) {
      float* row = nhwc + (size_t)y * FACE_IRIS_SIZE * 3;
      for (int x = 0; x < FACE_IRIS_SIZE / 2; ++x) {
        float t[3], *l = row + x * 3, *r = row + (FACE_IRIS_SIZE - 1 - x) * 3;
        memcpy(t, l, sizeof t);
        memcpy(l, r, sizeof t);
        memcpy(r, t, sizeof t);
      }
    }
  }
  const float scale = (float)(1.0 / 255.0);
  for (int i = 0; i < FACE_IRIS_INPUT_FLOATS; ++i) nhwc[i] *= scale;
  return 0;
}

void face_iris_decode(const float* iris_raw, const float* contour_raw, const face_roi* roi, int eye, float* points) {
  float crop[FACE_IRIS_COORDS];
  memcpy(crop, iris_raw, FACE_IRIS_IRIS_POINTS * 3 * sizeof(float));
  memcpy(crop + FACE_IRIS_IRIS_POINTS * 3, contour_raw, FACE_IRIS_CONTOUR_POINTS * 3 * sizeof(float));
  if (eye == FACE_IRIS_LEFT)
    for (int i = 0; i < FACE_IRIS_POINTS; ++i) crop[i * 3] = (float)(FACE_IRIS_SIZE - (double)crop[i * 3]);
  face_roi_to_image(roi, FACE_IRIS_SIZE, crop, FACE_IRIS_POINTS, points);
}

float face_iris_radius(const float* points) {
  double sum = 0;
  for (int i = 1; i < FACE_IRIS_IRIS_POINTS; ++i)
    sum += hypot((double)points[i * 3] - points[0], (double)points[i * 3 + 1] - points[1]);
  return (float)(sum / (FACE_IRIS_IRIS_POINTS - 1));
}
