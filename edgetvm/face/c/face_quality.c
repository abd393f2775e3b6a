/* Face quality on the board: see face_quality.h; every formula has its twin in edgetvm/face/quality.py
 * (double precision here as numpy's float64 there; the alignment matrix is the float32 one of
 * face_proc.c, so yaw and pitch agree with Python to about 1e-4). */
#include "face_quality.h"

#include <math.h>

#include "face_proc.h"

/* Nose height between the eye line and the mouth line on the ArcFace template. */
#define TEMPLATE_PITCH_RATIO \
  ((71.7366 - (51.6963 + 51.5014) / 2) / ((92.3655 + 92.2041) / 2 - (51.6963 + 51.5014) / 2))
#define PI 3.14159265358979323846

static double ramp(double value, double bad, double good) {
  double t = (value - bad) / (good - bad);
  return t < 0 ? 0 : (t > 1 ? 1 : t);
}

static double min2(double a, double b) { return a < b ? a : b; }

int face_assess_quality(const float* crop, const float lm[10], face_quality* q) {
  enum { S = FACE_ALIGNED_SIZE };
  double grey[S * S]; /* 100 KB of stack, not static: callers may run faces in parallel */
  for (int i = 0; i < S * S; ++i)
    grey[i] = (double)crop[3 * i] * 0.299 + (double)crop[3 * i + 1] * 0.587 + (double)crop[3 * i + 2] * 0.114;

  /* Variance of the 4-neighbour Laplacian over the interior, two passes. */
  double sum = 0, sq = 0;
  const int n = (S - 2) * (S - 2);
  for (int pass = 0; pass < 2; ++pass) {
    double mean = sum / n;
    for (int y = 1; y < S - 1; ++y)
      for (int x = 1; x < S - 1; ++x) {
        const double* p = grey + y * S + x;
        double lap = p[-S] + p[S] + p[-1] + p[1] - 4.0 * p[0];
        if (pass == 0) sum += lap;
        else sq += (lap - mean) * (lap - mean);
      }
  }
  double sharpness = sq / n;

  double eye_distance = hypot((double)lm[2] - lm[0], (double)lm[3] - lm[1]);
  double roll = atan2((double)lm[3] - lm[1], (double)lm[2] - lm[0]) * 180.0 / PI;
  float m[6];
  if (face_alignment_matrix(lm, m) != 0) return -1;
  double ax[5], ay[5];
  for (int k = 0; k < 5; ++k) {
    ax[k] = (double)m[0] * lm[2 * k] + (double)m[1] * lm[2 * k + 1] + m[2];
    ay[k] = (double)m[3] * lm[2 * k] + (double)m[4] * lm[2 * k + 1] + m[5];
  }
  double aligned_eyes = hypot(ax[1] - ax[0], ay[1] - ay[0]);
  double half = aligned_eyes / 2 > 1e-6 ? aligned_eyes / 2 : 1e-6;
  double offset = (ax[2] - (ax[0] + ax[1]) / 2) / half;
  offset = offset < -1 ? -1 : (offset > 1 ? 1 : offset);
  double yaw = asin(offset) * 180.0 / PI;
  double eye_y = (ay[0] + ay[1]) / 2, mouth_y = (ay[3] + ay[4]) / 2;
  double pitch_ratio = fabs(mouth_y - eye_y) > 1e-6 ? (ay[2] - eye_y) / (mouth_y - eye_y) : 0.0;

  /* Exposure over the central face region, rows 30..99 and columns 26..85. */
  double total = 0;
  int clipped = 0, count = 0;
  for (int y = 30; y < 100; ++y)
    for (int x = 26; x < 86; ++x, ++count) {
      double v = grey[y * S + x];
      total += v;
      clipped += v <= 5 || v >= 250;
    }
  double brightness = total / count, clipped_fraction = (double)clipped / count;

  q->size = (float)ramp(eye_distance, 15.0, 35.0);
  q->sharpness = (float)ramp(sharpness, 10.0, 80.0);
  q->pose = (float)min2(ramp(fabs(yaw), 45.0, 20.0), ramp(fabs(pitch_ratio - TEMPLATE_PITCH_RATIO), 0.3, 0.18));
  q->exposure = (float)min2(min2(ramp(brightness, 20.0, 70.0), ramp(brightness, 240.0, 190.0)),
                            ramp(clipped_fraction, 0.35, 0.1));
  q->score = (float)min2(min2(q->size, q->sharpness), min2(q->pose, q->exposure));
  q->eye_distance_px = (float)eye_distance;
  q->laplacian_variance = (float)sharpness;
  q->yaw_deg = (float)yaw;
  q->roll_deg = (float)roll;
  q->pitch_ratio = (float)pitch_ratio;
  q->mean_grey = (float)brightness;
  q->clipped_fraction = (float)clipped_fraction;
  return 0;
}
