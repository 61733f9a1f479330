/* bench_decode.c: time unigs_decode_colormap on a PPM colormap.
 * Prints "median_ms min_ms page_faults_per_call". */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>

#include "unigs.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static long page_faults(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_minflt + r.ru_majflt;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s COLORMAP.ppm REPEATS\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    int w, h, maxval;
    if (!f || fscanf(f, "P6 %d %d %d", &w, &h, &maxval) != 3) { fprintf(stderr, "bad PPM\n"); return 1; }
    fgetc(f);
    size_t n = (size_t)w * h * 3;
    unsigned char *rgb = malloc(n);
    if (fread(rgb, 1, n, f) != n) { fprintf(stderr, "truncated PPM\n"); return 1; }
    fclose(f);
    int repeats = atoi(argv[2]), k;
    size_t size = unigs_required_size(UNIGS_LABELS, w, h);
    int32_t *labels = malloc(size);
    double *t = malloc(sizeof(double) * repeats);
    for (int i = 0; i < 3; i++) unigs_decode_colormap(rgb, w, h, 3 * w, NULL, labels, size, &k); /* warm-up, JIT */
    long faults = page_faults();
    for (int i = 0; i < repeats; i++) {
        double t0 = now_ms();
        if (unigs_decode_colormap(rgb, w, h, 3 * w, NULL, labels, size, &k) != UNIGS_OK) {
            fprintf(stderr, "%s\n", unigs_last_error(NULL));
            return 1;
        }
        t[i] = now_ms() - t0;
    }
    faults = page_faults() - faults;
    qsort(t, repeats, sizeof(double), cmp);
    printf("%.4f %.4f %.1f\n", t[repeats / 2], t[0], (double)faults / repeats);
    return 0;
}
