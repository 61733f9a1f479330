/* pnm.h: the C examples' image reader: binary PNM (P6 RGB, P5 grey), 8-bit. */
#ifndef UNIGS_EXAMPLES_PNM_H
#define UNIGS_EXAMPLES_PNM_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A binary PNM of `channels` 8-bit channels ("P6": 3, "P5": 1), malloc'ed; NULL (and a message
 * on stderr) when unreadable. */
static unsigned char *read_pnm(const char *path, const char *magic, int channels, int *w, int *h) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); return NULL; }
    char m[3] = {0};
    int maxval = 0;
    if (fscanf(f, "%2s %d %d %d", m, w, h, &maxval) != 4 || strcmp(m, magic) || maxval != 255 || *w <= 0 || *h <= 0) {
        fprintf(stderr, "%s is not an 8-bit binary PNM (%s)\n", path, magic);
        fclose(f);
        return NULL;
    }
    fgetc(f); /* the single whitespace after the header */
    size_t n = (size_t)(*w) * (size_t)(*h) * channels;
    unsigned char *px = malloc(n);
    if (!px || fread(px, 1, n, f) != n) {
        fprintf(stderr, "%s is truncated\n", path);
        free(px);
        px = NULL;
    }
    fclose(f);
    return px;
}

#endif
