/* Dense landmarks on the board: see face_mesh.h. */
#include "face_mesh.h"

#include <math.h>

enum { RIGHT_EYE_OUTER = 33, LEFT_EYE_OUTER = 263, FOREHEAD = 10, CHIN = 152 };

const int FACE_MESH_RIGHT_EYE[6] = {33, 160, 158, 133, 153, 144};
const int FACE_MESH_LEFT_EYE[6] = {362, 385, 387, 263, 373, 380};

int face_mesh_roi_from_det(const face_det* face, float scale, face_roi* roi) {
  double x1 = face->box[0], y1 = face->box[1], x2 = face->box[2], y2 = face->box[3];
  double side = scale * fmax(x2 - x1, y2 - y1);
  if (side <= 1) return -1;
  roi->cx = (float)((x1 + x2) / 2);
  roi->cy = (float)((y1 + y2) / 2);
  roi->size = (float)side;
  roi->angle = (float)atan2((double)face->landmarks[3] - face->landmarks[1],
                            (double)face->landmarks[2] - face->landmarks[0]);
  return 0;
}

void face_mesh_roi_from_points(const float* points, float scale, face_roi* roi) {
  double dx = (double)points[LEFT_EYE_OUTER * 3] - points[RIGHT_EYE_OUTER * 3];
  double dy = (double)points[LEFT_EYE_OUTER * 3 + 1] - points[RIGHT_EYE_OUTER * 3 + 1];
  double angle = atan2(dy, dx), c = cos(angle), s = sin(angle);
  double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
  for (int i = 0; i < FACE_MESH_POINTS; ++i) {
    double x = points[i * 3], y = points[i * 3 + 1];
    double local[2] = {c * x + s * y, -s * x + c * y};  /* R(-angle) p */
    for (int k = 0; k < 2; ++k) {
      lo[k] = fmin(lo[k], local[k]);
      hi[k] = fmax(hi[k], local[k]);
    }
  }
  double mx = (lo[0] + hi[0]) / 2, my = (lo[1] + hi[1]) / 2;
  roi->cx = (float)(c * mx - s * my);
  roi->cy = (float)(s * mx + c * my);
  roi->size = (float)(scale * fmax(hi[0] - lo[0], hi[1] - lo[1]));
  roi->angle = (float)angle;
}

void face_mesh_roi_matrix(const face_roi* roi, int out_size, float matrix[6]) {
  double k = out_size / (double)roi->size, c = cos((double)roi->angle), s = sin((double)roi->angle);
  double half = (out_size - 1) / 2.0, a = k * c, b = k * s;
  matrix[0] = (float)a;
  matrix[1] = (float)b;
  matrix[2] = (float)(half - (a * roi->cx + b * roi->cy));
  matrix[3] = (float)-b;
  matrix[4] = (float)a;
  matrix[5] = (float)(half - (-b * roi->cx + a * roi->cy));
}

int face_mesh_input(const uint8_t* rgb, int w, int h, const face_roi* roi, float* nhwc) {
  float matrix[6];
  face_mesh_roi_matrix(roi, FACE_MESH_SIZE, matrix);
  if (face_warp_affine(rgb, w, h, matrix, FACE_MESH_SIZE, FACE_MESH_SIZE, nhwc) != 0) return -1;
  const float scale = (float)(1.0 / 255.0);
  for (int i = 0; i < FACE_MESH_INPUT_FLOATS; ++i) nhwc[i] *= scale;
  return 0;
}

void face_roi_to_image(const face_roi* roi, int out_size, const float* raw, int n, float* points) {
  double k = out_size / (double)roi->size, c = cos((double)roi->angle), s = sin((double)roi->angle);
  for (int i = 0; i < n; ++i) {
    double lx = (raw[i * 3] - out_size / 2.0) / k, ly = (raw[i * 3 + 1] - out_size / 2.0) / k;
    points[i * 3] = (float)(c * lx - s * ly + roi->cx);
    points[i * 3 + 1] = (float)(s * lx + c * ly + roi->cy);
    points[i * 3 + 2] = (float)(raw[i * 3 + 2] / k);
  }
}

float face_mesh_decode(const float* raw, float logit, const face_roi* roi, float* points) {
  face_roi_to_image(roi, FACE_MESH_SIZE, raw, FACE_MESH_POINTS, points);
  return logit > -60.0f ? (float)(1.0 / (1.0 + exp(-(double)logit))) : 0.0f;
}

static double norm3(const double v[3]) { return sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]); }

static double clamp1(double v) { return v < -1 ? -1 : v > 1 ? 1 : v; }

int face_head_pose(const float* points, face_pose* pose) {
  double x[3], v[3], y[3];
  for (int k = 0; k < 3; ++k) {
    x[k] = (double)points[LEFT_EYE_OUTER * 3 + k] - points[RIGHT_EYE_OUTER * 3 + k];
    v[k] = (double)points[CHIN * 3 + k] - points[FOREHEAD * 3 + k];
  }
  double nx = norm3(x);
  if (nx < 1e-9 || norm3(v) < 1e-9) return -1;
  for (int k = 0; k < 3; ++k) x[k] /= nx;
  double along = v[0] * x[0] + v[1] * x[1] + v[2] * x[2];
  for (int k = 0; k < 3; ++k) y[k] = v[k] - along * x[k];
  double ny = norm3(y);
  if (ny < 1e-9) return -1;
  for (int k = 0; k < 3; ++k) y[k] /= ny;
  const double deg = 180.0 / 3.14159265358979323846;
  pose->yaw = (float)(asin(clamp1(x[2])) * deg);
  pose->pitch = (float)(asin(clamp1(y[2])) * deg);
  pose->roll = (float)(atan2(x[1], x[0]) * deg);
  return 0;
}

static double distance(const float* points, int a, int b) {
  double d[3];
  for (int k = 0; k < 3; ++k) d[k] = (double)points[a * 3 + k] - points[b * 3 + k];
  return norm3(d);
}

float face_eye_aspect_ratio(const float* points, const int six[6]) {
  double width = distance(points, six[0], six[3]);
  if (width < 1e-9) return 0.0f;
  return (float)((distance(points, six[1], six[5]) + distance(points, six[2], six[4])) / (2 * width));
}

float face_mouth_aspect_ratio(const float* points) {
  double width = distance(points, 78, 308);
  return width < 1e-9 ? 0.0f : (float)(distance(points, 13, 14) / width);
}
