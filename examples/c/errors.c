/* errors.c: bad input through the C API gives status codes and messages, never a crash.
 * Prints one line per case: "<case> <status> <message>". Used by tests/test_capi.py. */
#include <stdio.h>
#include <stdlib.h>

#include "unigs.h"

static int cancel_at_2(int step, int total, void *user_data) {
    (void)total;
    ++*(int *)user_data;
    return step >= 2;
}

#define SHOW(name, expr) do { int s_ = (expr); printf("%s %d %s\n", name, s_, unigs_last_error(NULL)); } while (0)

int main(int argc, char **argv) {
    uint8_t rgb[16 * 16 * 3] = {0};
    int32_t labels[16 * 16];
    int n;
    printf("version %s %d.%d\n", unigs_version(), UNIGS_VERSION_MAJOR, UNIGS_VERSION_MINOR);
    SHOW("null_colormap", unigs_decode_colormap(NULL, 16, 16, 48, NULL, labels, sizeof labels, &n));
    SHOW("zero_size", unigs_decode_colormap(rgb, 0, 16, 48, NULL, labels, sizeof labels, &n));
    SHOW("bad_stride", unigs_decode_colormap(rgb, 16, 16, 10, NULL, labels, sizeof labels, &n));
    SHOW("small_buffer", unigs_decode_colormap(rgb, 16, 16, 48, NULL, labels, 10, &n));
    SHOW("null_out", unigs_decode_colormap(rgb, 16, 16, 48, NULL, NULL, sizeof labels, &n));
    SHOW("ok", unigs_decode_colormap(rgb, 16, 16, 48, NULL, labels, sizeof labels, &n));
    unigs_t *u = unigs_open("/nonexistent/unigs.onnx", NULL);
    printf("missing_engine %s %s\n", u ? "handle" : "NULL", unigs_last_error(NULL));
    u = unigs_open(NULL, NULL);
    printf("null_engine %s %s\n", u ? "handle" : "NULL", unigs_last_error(NULL));
    SHOW("null_handle", unigs_segment(NULL, rgb, 16, 16, 48, NULL, labels, sizeof labels, &n));
    if (argc > 1) { /* a real engine: errors on a live handle */
        u = unigs_open(argv[1], NULL);
        if (!u) { printf("open_failed %s\n", unigs_last_error(NULL)); return 1; }
        int s = unigs_segment(u, rgb, 16, 16, 48, NULL, labels, 100, &n);
        printf("handle_small_buffer %d %s\n", s, unigs_last_error(u));
        uint8_t mask[16 * 16] = {0};
        uint8_t out[16 * 16];
        s = unigs_refer(u, rgb, 16, 16, 48, mask, 16, "a red star", NULL, out, sizeof out);
        printf("empty_mask %d %s\n", s, unigs_last_error(u));
        s = unigs_refer(u, rgb, 16, 16, 48, mask, 16, NULL, NULL, out, sizeof out);
        printf("null_prompt %d %s\n", s, unigs_last_error(u));
        unigs_params p;
        unigs_params_init(&p);
        int calls = 0;
        p.steps = 5;
        p.progress = cancel_at_2;
        p.user_data = &calls;
        s = unigs_segment(u, rgb, 16, 16, 48, &p, labels, sizeof labels, &n);
        printf("cancelled %d calls=%d %s\n", s, calls, unigs_last_error(u));
        p.progress = NULL;
        p.guidance = 0.5f;
        s = unigs_segment(u, rgb, 16, 16, 48, &p, labels, sizeof labels, &n);
        printf("low_guidance %d %s\n", s, unigs_last_error(u));
        p.guidance = 0.0f;
        p.guidance_interval[0] = 700.0f;
        p.guidance_interval[1] = 600.0f;
        s = unigs_segment(u, rgb, 16, 16, 48, &p, labels, sizeof labels, &n);
        printf("bad_interval %d %s\n", s, unigs_last_error(u));
        unigs_close(u);
    }
    return 0;
}
