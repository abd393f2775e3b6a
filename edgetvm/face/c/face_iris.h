/* Iris on the board: the eye crops of a FaceMesh mesh and Iris's outputs back in the image, in plain
 * C99 next to face_mesh.c. Mirrors FaceLandmarker.irises in edgetvm/face/landmarks.py with the same
 * arithmetic (MediaPipe's iris_landmark_cpu).
 *
 * Each eye's crop (face_roi, face_mesh.h) is a square centred between the eye's two corners (mesh
 * points 33 -> 133 for the person's right eye, 362 -> 263 for the left), turned by the line joining
 * them, of side 2.3 x the longer side of their bounding box, resampled to 64x64 RGB in [0, 1]. Iris
 * was trained on one side's eyes: the crop of the person's left eye is mirrored (x -> 63 - x in
 * pixels) before the network and its points mirrored back (x -> 64 - x in crop units, whose left
 * edge is 0) before they return to the image like FaceMesh's (p = c + R(angle) (q - 32) / k).
 *
 * Typical use, per mesh (iris.so from `edgetvm face build --landmarks`; outputs of 15 and 213 floats,
 * in whichever order iris_output_bytes gives):
 *
 *   for (int eye = 0; eye < FACE_IRIS_EYES; ++eye) {        // FACE_IRIS_RIGHT, FACE_IRIS_LEFT
 *     face_roi roi;  float input[FACE_IRIS_INPUT_FLOATS], iris_raw[15], contour_raw[213], out[FACE_IRIS_COORDS];
 *     face_iris_roi(points, eye, &roi);
 *     face_iris_input(rgb, w, h, &roi, eye, input);         // (1, 64, 64, 3), mirrored for the left eye
 *     ... iris_run(ctx, {input}, {contour_raw, iris_raw}) ...
 *     face_iris_decode(iris_raw, contour_raw, &roi, eye, out);  // 5 iris then 71 contour points (x, y, z)
 *     radius = face_iris_radius(out);
 *   }
 */
#ifndef EDGETVM_FACE_IRIS_H_
#define EDGETVM_FACE_IRIS_H_

#include <stdint.h>

#include "face_mesh.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FACE_IRIS_SIZE 64
#define FACE_IRIS_ROI_SCALE 2.3f
#define FACE_IRIS_INPUT_FLOATS (FACE_IRIS_SIZE * FACE_IRIS_SIZE * 3)
#define FACE_IRIS_IRIS_POINTS 5     /* the centre, then four on the rim */
#define FACE_IRIS_CONTOUR_POINTS 71 /* the eye's contour */
#define FACE_IRIS_POINTS (FACE_IRIS_IRIS_POINTS + FACE_IRIS_CONTOUR_POINTS)
#define FACE_IRIS_COORDS (FACE_IRIS_POINTS * 3)
#define FACE_IRIS_EYES 2

/* The person's eyes; the left one's crop is mirrored. */
enum { FACE_IRIS_RIGHT = 0, FACE_IRIS_LEFT = 1 };

/* The crop of eye `eye` (FACE_IRIS_RIGHT or FACE_IRIS_LEFT) of a mesh (468 x 3, image pixels). */
void face_iris_roi(const float* points, int eye, face_roi* roi);

/* Iris's input (64, 64, 3) float32: the crop, bilinear, zero outside, times 1/255, mirrored left to
 * right for the left eye. Returns -1 for an unknown eye or a degenerate crop (the eye's corners
 * coincide). */
int face_iris_input(const uint8_t* rgb, int w, int h, const face_roi* roi, int eye, float* nhwc);

/* Iris's outputs (15 iris and 213 contour crop coordinates) -> points (76 x 3, image pixels): the
 * 5 iris points (centre first) then the 71 contour points; z scaled like x. */
void face_iris_decode(const float* iris_raw, const float* contour_raw, const face_roi* roi, int eye, float* points);

/* The iris radius: the mean distance of the four rim points from the centre (x, y), image pixels. */
float face_iris_radius(const float* points);

#ifdef __cplusplus
}
#endif

#endif /* EDGETVM_FACE_IRIS_H_ */
