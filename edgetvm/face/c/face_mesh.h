/* Dense landmarks on the board: FaceMesh's crop, its outputs back in the image, head pose and the
 * eye and mouth ratios, in plain C99 next to face_proc.c. Mirrors edgetvm/face/landmarks.py and
 * edgetvm/face/attributes.py with the same arithmetic (double where Python uses float64).
 *
 * A crop (face_roi) is a square of side `size` image pixels centred at (cx, cy) and turned by
 * `angle` radians (clockwise on screen). With k = 192 / size, an image point p lands at crop pixel
 * q = k R(-angle) (p - c) + 95.5 (pixel centres at integers on both sides). FaceMesh's points have
 * the crop's left edge at 0, so they go back with p = c + R(angle) (q - 96) / k, z / k.
 *
 * Typical use, per detected face (facemesh.so from `edgetvm face build --landmarks`):
 *
 *   face_roi roi;  float input[FACE_MESH_INPUT_FLOATS], raw[FACE_MESH_COORDS], logit, points[FACE_MESH_COORDS];
 *   face_mesh_roi_from_det(&face, FACE_MESH_ROI_SCALE, &roi);
 *   for (int pass = 0; pass < 2; ++pass) {       // pass 2: on the crop of pass 1's mesh
 *     face_mesh_input(rgb, w, h, &roi, input);   // (1, 192, 192, 3) RGB in [0, 1]
 *     ... facemesh_run(ctx, {input}, {raw, &logit}) ...
 *     presence = face_mesh_decode(raw, logit, &roi, points);
 *     face_mesh_roi_from_points(points, FACE_MESH_ROI_SCALE, &roi);
 *   }
 *   face_head_pose(points, &pose);
 */
#ifndef EDGETVM_FACE_MESH_H_
#define EDGETVM_FACE_MESH_H_

#include <stdint.h>

#include "face_proc.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FACE_MESH_SIZE 192
#define FACE_MESH_POINTS 468
#define FACE_MESH_COORDS (FACE_MESH_POINTS * 3)
#define FACE_MESH_INPUT_FLOATS (FACE_MESH_SIZE * FACE_MESH_SIZE * 3)
#define FACE_MESH_ROI_SCALE 1.5f

typedef struct {
  float cx, cy, size, angle;
} face_roi;

/* Degrees; yaw > 0 turned toward the image's right, pitch > 0 chin farther than forehead, roll > 0
 * the image-right eye lower (edgetvm/face/landmarks.py). */
typedef struct {
  float yaw, pitch, roll;
} face_pose;

/* MediaPipe's crop of a detection: box centre, scale * max(w, h), eye line (landmarks 0 -> 1).
 * Returns -1 for an empty box. */
int face_mesh_roi_from_det(const face_det* face, float scale, face_roi* roi);

/* MediaPipe's crop of a mesh (image pixels, 468 x 3): its bounding box in the frame turned by the
 * outer eye corners 33 -> 263, scale * the longer side. */
void face_mesh_roi_from_points(const float* points, float scale, face_roi* roi);

/* The 2x3 map image pixel -> crop pixel of an out_size x out_size crop. */
void face_mesh_roi_matrix(const face_roi* roi, int out_size, float matrix[6]);

/* FaceMesh's input (192, 192, 3) float32: the crop, bilinear, zero outside, times 1/255.
 * Returns -1 for a degenerate crop. */
int face_mesh_input(const uint8_t* rgb, int w, int h, const face_roi* roi, float* nhwc);

/* n network points (x, y, z) in the units of an out_size crop of roi (its left edge at 0) -> image
 * pixels: p = c + R(angle) (q - out_size / 2) / k, z / k, with k = out_size / size. */
void face_roi_to_image(const face_roi* roi, int out_size, const float* raw, int n, float* points);

/* Network outputs (1404 crop coordinates, presence logit) -> points (468 x 3) in image pixels;
 * returns the presence probability sigmoid(logit). */
float face_mesh_decode(const float* raw, float logit, const face_roi* roi, float* points);

/* Yaw, pitch, roll from the eye line and the forehead-chin line of a mesh. Returns -1 when they
 * are degenerate. */
int face_head_pose(const float* points, face_pose* pose);

/* (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) of six mesh points (3-D). */
float face_eye_aspect_ratio(const float* points, const int six[6]);

/* |P13 - P14| / |P78 - P308|: the inner lips' gap over the mouth's inner width. */
float face_mouth_aspect_ratio(const float* points);

extern const int FACE_MESH_RIGHT_EYE[6];
extern const int FACE_MESH_LEFT_EYE[6];

#ifdef __cplusplus
}
#endif

#endif /* EDGETVM_FACE_MESH_H_ */
