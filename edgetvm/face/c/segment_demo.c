/* segment_demo: person segmentation on the board, next to the bundle's segmenter.so.
 *
 *   ./segment_demo IMAGE.ppm -o MASK.pgm [--raw MASK.f32] [--threads N]
 *                  [--background #RRGGBB|BACKGROUND.ppm --composite OUT.ppm]
 *
 * Reads a binary PPM (P6) or PGM (P5) image, runs the selfie segmenter on it (face_seg.h for the
 * pre- and post-processing) and writes the mask as an 8-bit PGM (255 = person); --raw also writes
 * the float32 mask (h x w, native byte order). --background replaces the background by a colour or
 * by a PPM of the image's size, written to --composite. Prints
 *
 *   image PATH W H
 *   segmenter IN_W IN_H
 *   person_fraction F        (mask >= 0.5)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "face_proc.h"
#include "face_seg.h"
#include "segmenter.h"

static int fail(const char* what, const char* why) {
  fprintf(stderr, "segment_demo: %s: %s\n", what, why);
  return 1;
}

static int usage(const char* argv0) {
  fprintf(stderr, "usage: %s IMAGE.ppm -o MASK.pgm [--raw MASK.f32] [--threads N] "
                  "[--background #RRGGBB|BACKGROUND.ppm --composite OUT.ppm]\n", argv0);
  return 2;
}

static int parse_color(const char* text, uint8_t color[3]) {
  unsigned r, g, b;
  char end;
  if (text[0] != '#' || strlen(text) != 7 || sscanf(text + 1, "%2x%2x%2x%c", &r, &g, &b, &end) != 3) return -1;
  color[0] = (uint8_t)r;
  color[1] = (uint8_t)g;
  color[2] = (uint8_t)b;
  return 0;
}

/* Segment rgb (w x h) into mask (w x h). */
static int segment(segmenter_ctx* ctx, const uint8_t* rgb, int w, int h, float* mask) {
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
    if (segmenter_run_checked(ctx, in, in_bytes, out, out_bytes) != EDGETVM_OK)
      rc = fail("segmenter", segmenter_last_error(ctx));
    else
      face_seg_mask(prob, in_w, in_h, w, h, mask);
  }
  free(input);
  free(prob);
  return rc;
}

int main(int argc, char** argv) {
  const char *image = NULL, *mask_path = NULL, *raw_path = NULL, *background = NULL, *composite_path = NULL;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "-o") && i + 1 < argc) mask_path = argv[++i];
    else if (!strcmp(argv[i], "--raw") && i + 1 < argc) raw_path = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--background") && i + 1 < argc) background = argv[++i];
    else if (!strcmp(argv[i], "--composite") && i + 1 < argc) composite_path = argv[++i];
    else if (argv[i][0] != '-' && !image) image = argv[i];
    else return usage(argv[0]);
  }
  if (!image || !mask_path || !background != !composite_path) return usage(argv[0]);

  int w, h;
  uint8_t* rgb = face_read_pnm(image, &w, &h);
  if (!rgb) return fail(image, "cannot read it as a binary PPM (P6) or PGM (P5) with maxval 255");
  uint8_t color[3];
  uint8_t* picture = NULL;
  if (background && parse_color(background, color) != 0) {
    int bw, bh;
    picture = face_read_pnm(background, &bw, &bh);
    if (!picture) return fail(background, "neither a colour #RRGGBB nor a readable binary PPM");
    if (bw != w || bh != h) return fail(background, "the background picture must have the image's size");
  }
  segmenter_ctx* ctx = threads > 0 ? segmenter_create_with_threads(threads) : segmenter_create();
  float* mask = (float*)malloc((size_t)w * h * sizeof(float));
  uint8_t* grey = (uint8_t*)malloc((size_t)w * h);
  if (!ctx || !mask || !grey) return fail("segmenter", "out of memory");
  if (segment(ctx, rgb, w, h, mask)) return 1;

  face_seg_mask_to_grey(mask, w, h, grey);
  if (face_write_pnm(mask_path, grey, w, h, 1) != 0) return fail(mask_path, "cannot write");
  if (raw_path) {
    FILE* f = fopen(raw_path, "wb");
    size_t n = (size_t)w * h;
    if (!f || fwrite(mask, sizeof(float), n, f) != n || fclose(f) != 0) return fail(raw_path, "cannot write");
  }
  if (composite_path) {
    if (picture) face_seg_composite(rgb, mask, picture, w, h, rgb);
    else face_seg_composite_color(rgb, mask, color, w, h, rgb);
    if (face_write_pnm(composite_path, rgb, w, h, 3) != 0) return fail(composite_path, "cannot write");
  }
  const int64_t* shape = segmenter_input_shape(0);
  printf("image %s %d %d\nsegmenter %d %d\nperson_fraction %.6f\n", image, w, h, (int)shape[2], (int)shape[1],
         (double)face_seg_person_fraction(mask, w, h, 0.5f));
  segmenter_destroy(ctx);
  free(mask);
  free(grey);
  free(picture);
  free(rgb);
  return 0;
}
