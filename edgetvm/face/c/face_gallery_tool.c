/* face_gallery: inspect and search a gallery file on the board, without the networks.
 *
 *   ./face_gallery GALLERY list
 *   ./face_gallery GALLERY search EMBEDDING.bin [K] [--repeat N]
 *   ./face_gallery GALLERY enroll NAME EMBEDDING.bin
 *   ./face_gallery GALLERY remove NAME
 *
 * EMBEDDING.bin is one float32 embedding in native byte order (face_demo -o writes them). search
 * prints "match RANK NAME SCORE" lines and "identity NAME" (or "identity unknown" under the
 * gallery's threshold); --repeat runs the search N times, for counting its instructions under qemu
 * (N+1 minus 1). enroll creates the gallery when the file does not exist (threshold 0.363).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "face_gallery.h"

static int fail(const char* what, int code) {
  fprintf(stderr, "face_gallery: %s: %s\n", what, face_gallery_strerror(code));
  return 1;
}

static float* read_embedding(const char* path, uint32_t dim) {
  FILE* f = fopen(path, "rb");
  float* e = (float*)malloc(dim * sizeof(float));
  int ok = f && e && fread(e, sizeof(float), dim, f) == dim;
  if (f) fclose(f);
  if (!ok) {
    fprintf(stderr, "face_gallery: %s: cannot read %u float32 values\n", path, dim);
    free(e);
    return NULL;
  }
  return e;
}

static int usage(void) {
  fprintf(stderr, "usage: face_gallery GALLERY list | search EMBEDDING.bin [K] [--repeat N] | "
                  "enroll NAME EMBEDDING.bin | remove NAME\n");
  return 2;
}

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const char *path = argv[1], *cmd = argv[2];
  face_gallery g;
  int rc = face_gallery_load(&g, path);
  if (rc == FACE_GALLERY_EIO && !strcmp(cmd, "enroll")) rc = face_gallery_init(&g, 128, 0.363f, "sface");
  if (rc != FACE_GALLERY_OK) return fail(path, rc);
  int status = 0;
  if (!strcmp(cmd, "list")) {
    printf("gallery %s identities %u samples %u dim %u threshold %.6f recognizer %s\n", path, g.n_identities,
           g.n_samples, g.dim, g.threshold, g.recognizer);
    for (uint32_t i = 0; i < g.n_identities; ++i) printf("identity %s %u\n", g.identities[i].name, g.identities[i].count);
  } else if (!strcmp(cmd, "search") && argc >= 4) {
    int k = 5, repeat = 1;
    for (int i = 4; i < argc; ++i) {
      if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
      else k = atoi(argv[i]);
    }
    float* e = read_embedding(argv[3], g.dim);
    face_match* m = (face_match*)malloc((size_t)(k > 0 ? k : 1) * sizeof(face_match));
    if (!e || !m || k < 1 || repeat < 1) {
      status = e && m ? usage() : 1;
    } else {
      int n = 0;
      for (int r = 0; r < repeat && n >= 0; ++r) n = face_gallery_search(&g, e, m, k);
      if (n < 0) status = fail("search", n);
      for (int i = 0; i < n; ++i) printf("match %d %s %.6f\n", i, g.identities[m[i].identity].name, m[i].score);
      if (n >= 0)
        printf("identity %s\n", n > 0 && m[0].score >= g.threshold ? g.identities[m[0].identity].name : "unknown");
    }
    free(e);
    free(m);
  } else if (!strcmp(cmd, "enroll") && argc == 5) {
    float* e = read_embedding(argv[4], g.dim);
    if (!e) status = 1;
    else if ((rc = face_gallery_enroll(&g, argv[3], e)) != FACE_GALLERY_OK || (rc = face_gallery_save(&g, path)) != FACE_GALLERY_OK)
      status = fail(argv[3], rc);
    free(e);
  } else if (!strcmp(cmd, "remove") && argc == 4) {
    if ((rc = face_gallery_remove(&g, argv[3])) != FACE_GALLERY_OK || (rc = face_gallery_save(&g, path)) != FACE_GALLERY_OK)
      status = fail(argv[3], rc);
  } else {
    status = usage();
  }
  face_gallery_free(&g);
  return status;
}
