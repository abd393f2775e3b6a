/* Face attributes on the board: dlib's face chip cut at the FaceMesh points of dlib's five-point
 * shape, the age and gender networks' input, and the age expectation. Mirrors
 * edgetvm/face/attributes.py (see its docstring for the model and the crop).
 *
 * Per face, after face_mesh.h's stage (points: 468 x 3 image pixels), with gender.so and age.so from
 * `edgetvm face build --attributes`:
 *
 *   uint8_t chip[FACE_AGE_CHIP * FACE_AGE_CHIP * 3];  float input[3 * FACE_AGE_CHIP * FACE_AGE_CHIP], p[81];
 *   face_dlib_chip(rgb, w, h, points, FACE_AGE_CHIP, chip);
 *   face_chip_input(chip, FACE_AGE_CHIP, input);      ... age_run(...) -> p ...
 *   int age = (int)floorf(face_age_expectation(p) + 0.5f);
 *   (gender alike at FACE_GENDER_CHIP: p[0] female, p[1] male)
 */
#ifndef EDGETVM_FACE_ATTR_H_
#define EDGETVM_FACE_ATTR_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FACE_AGE_CHIP 64
#define FACE_GENDER_CHIP 32
#define FACE_AGE_CLASSES 81

/* The size x size uint8 RGB chip: the least-squares similarity from dlib's template (padding 0.2) to
 * mesh points 263, 398, 33, 173, 2; sampled 2^d times larger and box-averaged where the face is
 * more than twice the chip; truncated to uint8. Returns -1 for degenerate points or no memory. */
int face_dlib_chip(const uint8_t* rgb, int w, int h, const float* points, int size, uint8_t* chip);

/* uint8 chip (size, size, 3) -> network input (1, 3, size, size): (x - dlib's RGB mean) / 256. */
void face_chip_input(const uint8_t* chip, int size, float* nchw);

/* sum_i w_i p_i over the 81 age classes (w = 0.25, 1, ..., 80), in class order, float32. */
float face_age_expectation(const float* probabilities);

#ifdef __cplusplus
}
#endif

#endif /* EDGETVM_FACE_ATTR_H_ */
