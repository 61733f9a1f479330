/*
 * inpaint.c: inpaint one region of an image with libunigs and write the new image.
 *
 *   inpaint ENGINE IMAGE.ppm MASK.pgm PROMPT OUT.ppm [STEPS [SEED [KEEP_UNMASKED [LOCATE [CANDIDATES [RERANK]]]]]]
 *
 * IMAGE is a binary PPM (P6, 8-bit RGB), MASK a binary PGM (P5, 8-bit; non-zero = the region) of
 * the same size. OUT.ppm receives the image; OUT.ppm.labels the int32 label map (row-major).
 * KEEP_UNMASKED 1 keeps the input's pixels outside the region, -1 shows the model's own image
 * there, 0 the model's default; LOCATE is "colormap" or "refer" ("-": the model's default);
 * CANDIDATES draws that many and keeps the one the model's default rule picks (0: the model's
 * default count); RERANK 1 picks by the engine's reranker, -1 the most agreed-on, 0 the model's default.
 * Build: gcc inpaint.c $(pkg-config --cflags --libs unigs) -o inpaint
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pnm.h"
#include "unigs.h"

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s ENGINE IMAGE.ppm MASK.pgm PROMPT OUT.ppm [STEPS [SEED [KEEP_UNMASKED [LOCATE [CANDIDATES [RERANK [LOW,HIGH]]]]]]]\n",
                argv[0]);
        return 2;
    }
    int w = 0, h = 0, mw = 0, mh = 0, status = UNIGS_ERR_INVALID_ARGUMENT;
    unsigned char *rgb = read_pnm(argv[2], "P6", 3, &w, &h);
    unsigned char *mask = read_pnm(argv[3], "P5", 1, &mw, &mh);
    size_t image_size = unigs_required_size(UNIGS_RGB, w, h), labels_size = unigs_required_size(UNIGS_LABELS, w, h);
    unsigned char *image = malloc(image_size);
    int32_t *labels = malloc(labels_size);
    unigs_t *u = NULL;
    if (!rgb || !mask) goto done;
    if (mw != w || mh != h) {
        fprintf(stderr, "mask is %dx%d, the image %dx%d: they must match\n", mw, mh, w, h);
        goto done;
    }
    u = unigs_open(argv[1], NULL);
    if (!u) {
        fprintf(stderr, "cannot open engine: %s\n", unigs_last_error(NULL));
        goto done;
    }
    unigs_params params;
    unigs_params_init(&params);
    params.steps = argc > 6 ? atoi(argv[6]) : 0;  /* 0: the task's default */
    params.seed = argc > 7 ? strtoull(argv[7], NULL, 10) : 0;
    params.keep_unmasked = argc > 8 ? atoi(argv[8]) : 0;  /* 0: the model's default */
    params.locate = argc > 9 && strcmp(argv[9], "-") ? argv[9] : NULL;  /* NULL ("-"): the model's default */
    params.candidates = argc > 10 ? atoi(argv[10]) : 0;
    params.rerank = argc > 11 ? atoi(argv[11]) : 0;  /* 0: the model's default */
    if (argc > 12) sscanf(argv[12], "%f,%f", &params.guidance_interval[0], &params.guidance_interval[1]);
    const uint8_t *masks[1] = {mask};
    const char *prompts[1] = {argv[4]};
    status = unigs_inpaint(u, rgb, w, h, 3 * w, masks, w, prompts, 1, &params, image, image_size, NULL, 0, labels,
                           labels_size);
    if (status != UNIGS_OK) {
        fprintf(stderr, "inpaint failed (%d): %s\n", status, unigs_last_error(u));
        goto done;
    }
    char labels_path[4096];
    snprintf(labels_path, sizeof labels_path, "%s.labels", argv[5]);
    FILE *out = fopen(argv[5], "wb"), *lab = fopen(labels_path, "wb");
    if (!out || !lab || fprintf(out, "P6 %d %d 255\n", w, h) < 0 || fwrite(image, 1, image_size, out) != image_size
        || fwrite(labels, 1, labels_size, lab) != labels_size) {
        fprintf(stderr, "cannot write %s\n", argv[5]);
        status = UNIGS_ERR_INTERNAL;
    }
    if (out) fclose(out);
    if (lab) fclose(lab);
    if (status == UNIGS_OK) printf("%dx%d image written to %s, labels to %s\n", w, h, argv[5], labels_path);
done:
    unigs_close(u);
    free(rgb);
    free(mask);
    free(image);
    free(labels);
    return status == UNIGS_OK ? 0 : 1;
}
