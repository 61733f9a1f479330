/*
 * segment.c: segment an image with libunigs and write its label map.
 *
 *   segment ENGINE IMAGE.ppm LABELS.raw [STEPS [SEED]]   entity segmentation with a model
 *   segment --decode COLORMAP.ppm LABELS.raw             the dichotomy decoder alone
 *
 * IMAGE is a binary PPM (P6, 8-bit RGB: `convert in.png out.ppm`, or any raw RGB with a PPM
 * header). LABELS.raw receives width*height int32 labels, row-major.
 * Build: gcc segment.c $(pkg-config --cflags --libs unigs) -o segment
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pnm.h"
#include "unigs.h"

/* A progress callback: one line per step on stderr; returning non-zero would cancel the call. */
static int print_progress(int step, int total, void *user_data) {
    (void)user_data;
    fprintf(stderr, "\rdenoising: step %d/%d%s", step, total, step == total ? "\n" : "");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s ENGINE IMAGE.ppm LABELS.raw [STEPS [SEED [SCHEDULER [RESOLUTION [THRESHOLD [STOP]]]]]]\n"
                        "       %s --decode COLORMAP.ppm LABELS.raw\n", argv[0], argv[0]);
        return 2;
    }
    int decode_only = strcmp(argv[1], "--decode") == 0;
    int w = 0, h = 0;
    unsigned char *rgb = read_pnm(argv[2], "P6", 3, &w, &h);
    if (!rgb) return 1;
    size_t size = unigs_required_size(UNIGS_LABELS, w, h);
    int32_t *labels = malloc(size);
    int n = 0, status;
    if (decode_only) {
        status = unigs_decode_colormap(rgb, w, h, 3 * w, NULL, labels, size, &n);
        if (status != UNIGS_OK) fprintf(stderr, "decode failed (%d): %s\n", status, unigs_last_error(NULL));
    } else {
        unigs_t *u = unigs_open(argv[1], NULL);
        if (!u) {
            fprintf(stderr, "cannot open engine: %s\n", unigs_last_error(NULL));
            free(rgb);
            free(labels);
            return 1;
        }
        unigs_params params;
        unigs_params_init(&params);
        params.progress = print_progress;
        params.steps = argc > 4 ? atoi(argv[4]) : 0;          /* 0: the task's default */
        params.seed = argc > 5 ? strtoull(argv[5], NULL, 10) : 0;
        params.scheduler = argc > 6 ? argv[6] : NULL;         /* NULL: the task's default */
        params.resolution = argc > 7 ? atoi(argv[7]) : 0;     /* 0: native, -1: the image's own size */
        params.threshold = argc > 8 ? (float)atof(argv[8]) : 0; /* 0: the model's split threshold */
        params.stop = argc > 9 ? argv[9] : NULL;              /* NULL: the model's split rule */
        status = unigs_segment(u, rgb, w, h, 3 * w, &params, labels, size, &n);
        if (status != UNIGS_OK) fprintf(stderr, "segment failed (%d): %s\n", status, unigs_last_error(u));
        unigs_close(u);
    }
    if (status == UNIGS_OK) {
        FILE *out = fopen(argv[3], "wb");
        if (!out || fwrite(labels, 1, size, out) != size) {
            fprintf(stderr, "cannot write %s\n", argv[3]);
            status = UNIGS_ERR_INTERNAL;
        }
        if (out) fclose(out);
        if (status == UNIGS_OK) printf("%d entities, %dx%d labels written to %s\n", n, w, h, argv[3]);
    }
    free(rgb);
    free(labels);
    return status == UNIGS_OK ? 0 : 1;
}
