/* The machine's float32 matrix-product rate as the kernel's compiler and flags reach it.

   torch's sgemm is the floor's usual yardstick, but its BLAS may not use the whole core (MKL
   takes its AVX2 path on AMD CPUs, half of an AVX-512 core's FMA width), so `listcopy bench
   --shapes` also times this: C (M x N) += A (M x K) B (K x N), register-tiled the way BLAS
   micro-kernels are (MR rows of A broadcast against NV vectors of a packed panel of B, MR x NV
   accumulators in registers), cache-resident, on `threads` threads each with its own matrices.
   W (lanes per vector, 16 with AVX-512, else 8) comes from -DW. Entry point: lc_matmul_probe. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifndef W
#define W 8
#endif
#define NV (W >= 16 ? 4 : 2)  /* vectors of B per tile: MR x NV accumulators + NV + 1 registers */
#define MR 6
#define NR (NV * W)
#define PM (MR * 32)
#define PN (NR * (W >= 16 ? 4 : 16))
#define PK 256

typedef float vf __attribute__((vector_size(4 * W)));

typedef struct {
    float *a, *b, *c;
    int reps;
} Job;

static void tile(const float *a, const float *b, float *c) {
    vf acc[MR][NV];
    for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) memcpy(&acc[i][v], c + i * PN + v * W, sizeof(vf));
    for (int k = 0; k < PK; ++k) {
        vf bk[NV];
        for (int v = 0; v < NV; ++v) memcpy(&bk[v], b + k * NR + v * W, sizeof(vf));
        for (int i = 0; i < MR; ++i) {
            const vf ak = (vf){0} + a[i * PK + k];
            for (int v = 0; v < NV; ++v) acc[i][v] += ak * bk[v];
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) memcpy(c + i * PN + v * W, &acc[i][v], sizeof(vf));
}

static void *run(void *arg) {
    const Job *job = arg;
    for (int r = 0; r < job->reps; ++r)
        for (int j = 0; j < PN / NR; ++j)  /* B packed by panels: [PN / NR][PK][NR] */
            for (int i = 0; i < PM / MR; ++i)
                tile(job->a + i * MR * PK, job->b + j * PK * NR, job->c + i * MR * PN + j * NR);
    return NULL;
}

/* Runs `reps` products on each of up to `threads` threads (this one and threads - 1 more);
   returns the FLOPs done (2 M N K per product), or -1 where memory could not be had. */
double lc_matmul_probe(int threads, int reps) {
    enum { MOST = 256 };
    if (threads < 1 || threads > MOST || reps < 0) return -1.0;
    Job jobs[MOST];
    pthread_t ids[MOST];
    const size_t na = (size_t)PM * PK, nb = (size_t)PK * PN, nc = (size_t)PM * PN;
    const size_t bytes = ((na + nb + nc) * sizeof(float) + 63) / 64 * 64;
    for (int t = 0; t < threads; ++t) {
        float *m = aligned_alloc(64, bytes);
        if (!m) {
            while (t-- > 0) free(jobs[t].a);
            return -1.0;
        }
        for (size_t n = 0; n < na + nb + nc; ++n) m[n] = (float)((n * 7919u) % 1024u) / 1024.0f - 0.5f;
        jobs[t] = (Job){m, m + na, m + na + nb, reps};
    }
    int started = 1;  /* a thread that cannot be started is left out of the count */
    while (started < threads && pthread_create(&ids[started], NULL, run, &jobs[started]) == 0) ++started;
    run(&jobs[0]);
    for (int t = 1; t < started; ++t) pthread_join(ids[t], NULL);
    for (int t = 0; t < threads; ++t) free(jobs[t].a);
    return 2.0 * PM * PN * PK * (double)reps * started;
}
