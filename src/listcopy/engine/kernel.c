/* listcopy's CPU kernel: forward, backward and AdamW of E attention-only models, many steps per call.

   The shape is compile-time: Python (listcopy/engine/kernel.py) writes a short header of #defines
   (sizes, where each parameter lives, the per-layer attention masks and which rows each layer
   needs) and passes it with -include, so every loop bound below is a constant. Entry points:
   lc_run (one of the modes of enum lc_mode, mirrored by listcopy.engine.kernel.Mode) and
   lc_work_bytes.

   Shapes: T positions, L list_len, D d_model, H heads, DH d_head, V vocab, NL layers,
   W lanes (sequences per SIMD group), P trained parameters per member, NFIX frozen ones given.
   Per-layer row tables (rows.py): ALLOW[l][i][j] query i receives from key j in layer l (a row
   with no key receives nothing: its pattern row is zero); NEED[l][t] position t of layer l's input
   reaches an output (NEED[NL]: the outputs); QROW rows with more than one key (they need a query),
   KROW rows whose key is compared, VROW rows whose value is read, NKEY the keys of each row.
   Parameters: SRC_x is 0 (trained: in theta, its gradient computed), 1 (frozen, given in fixed)
   or -1 (absent: identity W_V / W_O, zero biases, no LayerNorm); OFF_x its offset there.
   Variant knobs: LN (LayerNorm before each layer and the unembedding), DW_LANES (1: weight
   gradients accumulated lane by lane and summed once per step, for narrow models; 0: each group's
   rows multiplied, one side transposed into samples, for wide ones), FOLD (one head, W_V and W_O
   both present, learned or given: the rows multiply by W_VO = W_V W_O, formed once per step, instead of by W_V
   and then W_O; z is then the pattern times the layer's input, the bias b_V W_O + b_O on rows that
   receive something, and W_VO's gradient G becomes W_V's (G W_O^T) and W_O's (W_V^T G) once per
   step), NCONST (how many rows are the same in every sequence, CROW: constant tokens, and rows
   that receive only from constant rows; 0: none. Those rows are computed once per step, part 1,
   and left in the work buffers for every group, part 0; the gradient each group sends them is
   summed, and part 1 takes the sums back once per step). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#ifndef LC_SHAPE
#error "compile with -include <generated shape header> (see listcopy/engine/kernel.py)"
#endif

static const unsigned char ALLOW[NL][T][T] = ALLOW_INIT;
static const unsigned char NEED[NL + 1][T] = NEED_INIT;
static const unsigned char QROW[NL][T] = QROW_INIT;
static const unsigned char KROW[NL][T] = KROW_INIT;
static const unsigned char VROW[NL][T] = VROW_INIT;
static const unsigned char NKEY[NL][T] = NKEY_INIT;
static const unsigned char CROW[NL + 1][T] = CROW_INIT;
static const int OFF_LN1W[NL] = OFF_LN1W_INIT, OFF_LN1B[NL] = OFF_LN1B_INIT;
static const int OFF_WQ[NL] = OFF_WQ_INIT, OFF_WK[NL] = OFF_WK_INIT;
static const int OFF_WV[NL] = OFF_WV_INIT, OFF_WO[NL] = OFF_WO_INIT;
static const int OFF_BQ[NL] = OFF_BQ_INIT, OFF_BK[NL] = OFF_BK_INIT;
static const int OFF_BV[NL] = OFF_BV_INIT, OFF_BO[NL] = OFF_BO_INIT;

#define TR(x) (SRC_##x == 0)                    /* trained */
#define HAS(x) (SRC_##x >= 0)                   /* present */
#define MAT_V (!FOLD && (HAS(WV) || HAS(BV)))   /* values are materialised (not X's first DH dims) */
#define GRAD_O (FOLD ? TR(WO) || TR(WV) : TR(WO))  /* the gradient of the matrix z multiplies */
#define KEEP_Z GRAD_O                           /* z kept for that gradient */
#define GRAD_BVO (FOLD && HAS(BV) && (TR(BV) || TR(WO)))  /* b_V W_O's gradient is needed */
#define XL (LN ? NL : 1)
#define LN_EPS 1e-5f
/* CONST: row t of layer l's input is the same in every sequence (CROW: a constant token, and in
   later layers only constant keys); part 1 is those rows, once per step, part 0 the others */
#define CONST_ROW(l, t) (NCONST && CROW[l][t])
#define PART(l, t, part) (CONST_ROW(l, t) == (part))

enum lc_mode { LC_TRAIN = 0, LC_GRAD = 1, LC_EVAL = 2, LC_N_MODES = 3 };

/* W lanes: one SIMD vector (GCC / Clang vector extensions) holds one scalar of W sequences */
typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));
#define SPLAT(c) ((vf){0} + (float)(c))

static inline vf vsel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }
static inline vf loadu(const float *p) { vf x; memcpy(&x, p, sizeof x); return x; }
static inline void storeu(float *p, vf x) { memcpy(p, &x, sizeof x); }

/* exp: Cephes' expf polynomial on W lanes for x <= 0 (every caller subtracts a maximum first);
   NaN stays NaN, below -87 gives 0 */
static inline vf vexp(vf x) {
    const vi low = x < SPLAT(-87.0f);
    const vf xc = vsel(low, SPLAT(-87.0f), x);
    const vf fx = xc * 1.44269504088896341f - 0.5f;  /* <= 0: truncation rounds it to nearest */
    const vi n = __builtin_convertvector(fx, vi);
    const vf nf = __builtin_convertvector(n, vf);
    vf r = xc - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    vf y = SPLAT(1.9875691500e-4f);
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.0f;
    y = y * (vf)((n + 127) << 23);
    y = vsel(low, SPLAT(0.0f), y);
    return vsel(x != x, x, y);
}

static inline vf vrsqrt(vf x) {
    vf r;
    for (int w = 0; w < W; ++w) r[w] = 1.0f / sqrtf(x[w]);
    return r;
}

static float lane_sum(vf x) {
    float t[W];  /* pairwise: log2(W) dependent adds instead of W */
    memcpy(t, &x, sizeof t);
    for (int n = W / 2; n > 0; n /= 2)
        for (int w = 0; w < n; ++w) t[w] += t[w + n];
    return t[0];
}

/* ---- lane matrix products: y[j] (+)= sum_i x[i] * w[i * si + j * sj], x and y lane vectors ----
   The weight is broadcast, the batch is in the lanes: a block of NB outputs stays in registers
   while i runs. The same routine multiplies by a matrix (forward) and by its transpose (the
   gradient w.r.t. the input), through the strides. NB: 12 of AVX2's 16 registers; 16 of
   AVX-512's 32 (24 made a step 1.2-1.35x slower at d_model 32-128 on a Sapphire Rapids-class
   core), and the remainder in blocks of 8 and 4: 8 independent sums hide the FMA latency. */
#define NB (W >= 16 ? 16 : 12)

static inline __attribute__((always_inline)) void lmm_block(
        vf *y, const vf *x, const float *w, const int M, const int nb, const int si, const int sj,
        const float *bias, const int add) {
    vf acc[NB];
    for (int k = 0; k < nb; ++k) acc[k] = add ? y[k] : bias ? SPLAT(bias[k]) : SPLAT(0.0f);
    for (int i = 0; i < M; ++i) {
        const vf xi = x[i];
        const float *wi = w + (long)i * si;
        for (int k = 0; k < nb; ++k) acc[k] += xi * wi[k * sj];
    }
    for (int k = 0; k < nb; ++k) y[k] = acc[k];
}

static inline __attribute__((always_inline)) void lmm(
        vf *y, const vf *x, const float *w, const int M, const int N, const int si, const int sj,
        const float *bias, const int add) {
    int j = 0;
    for (; j + NB <= N; j += NB) lmm_block(y + j, x, w + (long)j * sj, M, NB, si, sj, bias ? bias + j : 0, add);
    for (; j + 8 <= N; j += 8) lmm_block(y + j, x, w + (long)j * sj, M, 8, si, sj, bias ? bias + j : 0, add);
    for (; j + 4 <= N; j += 4) lmm_block(y + j, x, w + (long)j * sj, M, 4, si, sj, bias ? bias + j : 0, add);
    for (; j < N; ++j) lmm_block(y + j, x, w + (long)j * sj, M, 1, si, sj, bias ? bias + j : 0, add);
}

/* ---- W x W transposes in registers (GCC's vector shuffles) ------------------------------------- */
#if defined(__GNUC__) && !defined(__clang__)
#define SHUFFLE_TRANSPOSE 1
#define LOG2W (W == 16 ? 4 : W == 8 ? 3 : W == 4 ? 2 : 1)
/* the two masks of each stage b = W/2, W/4, .. 1 of transpose_block, as constants (masks the
   compiler cannot see took a step at d_model 32 with AVX2 lanes 11% longer) */
#define TM0(b, w) (((w) & (b)) ? W + (w) - (b) : (w))
#define TM1(b, w) (((w) & (b)) ? W + (w) : (w) + (b))
#define TV4(F, b, o) F(b, o + 0), F(b, o + 1), F(b, o + 2), F(b, o + 3)
#if W == 16
#define TV(F, b) {TV4(F, b, 0), TV4(F, b, 4), TV4(F, b, 8), TV4(F, b, 12)}
#elif W == 8
#define TV(F, b) {TV4(F, b, 0), TV4(F, b, 4)}
#elif W == 4
#define TV(F, b) {TV4(F, b, 0)}
#else
#define TV(F, b) {F(b, 0), F(b, 1)}
#endif
#define TS(b) {TV(TM0, b), TV(TM1, b)}
static const vi TMASK[LOG2W][2] = {
#if W >= 16
    TS(8),
#endif
#if W >= 8
    TS(4),
#endif
#if W >= 4
    TS(2),
#endif
    TS(1)};

/* x[c][w] -> x[w][c] for a W x W block, in registers: log2(W) stages, each swapping the upper
   half of every b-block of row c with the lower half of row c + b's */
static inline __attribute__((always_inline)) void transpose_block(vf *x) {
#pragma GCC unroll 8
    for (int s = 0; s < LOG2W; ++s)
#pragma GCC unroll 16
        for (int c = 0; c < W; ++c) {
            const int b = W >> (s + 1);
            if (c & b) continue;
            const vf x0 = x[c], x1 = x[c + b];
            x[c] = __builtin_shuffle(x0, x1, TMASK[s][0]);
            x[c + b] = __builtin_shuffle(x0, x1, TMASK[s][1]);
        }
}
#else
#define SHUFFLE_TRANSPOSE 0
#endif

/* ---- weight gradients ---------------------------------------------------------------------- */
#if DW_LANES
/* lane-expanded: gw[i * si + j * sj] += x[i] * g[j]; summed over lanes once per step */
static inline void dw_lane(vf *gw, const vf *x, const vf *g, const int M, const int N, const int si,
                           const int sj) {
    for (int i = 0; i < M; ++i) {
        const vf xi = x[i];
        for (int j = 0; j < N; ++j) gw[i * si + j * sj] += xi * g[j];
    }
}
#else
/* rows of lane vectors (n rows of `width`) transposed into samples: dst[(r W + w) width + c];
   W columns at a time in registers where the compiler has vector shuffles, the rest one by one */
static void gather(float *dst, const vf *const *rows, const int n, const int width) {
    for (int r = 0; r < n; ++r) {
        float *out = dst + (int64_t)r * W * width;
        int c = 0;
#if SHUFFLE_TRANSPOSE
        for (; c + W <= width; c += W) {
            vf x[W];
            for (int i = 0; i < W; ++i) x[i] = rows[r][c + i];
            transpose_block(x);
            for (int w = 0; w < W; ++w) storeu(out + (int64_t)w * width + c, x[w]);
        }
#endif
        for (; c < width; ++c) {
            const vf x = rows[r][c];
            for (int w = 0; w < W; ++w) out[(int64_t)w * width + c] = x[w];
        }
    }
}

#endif

/* The broadcast operand of a weight gradient: sample s = r nw + w (r < nr, w < nw), input i at
   row[r][w sw + i si]. Samples transposed (one buffer): nr 1, sw the row's width, si 1. Lane
   vectors as the kernel keeps them (a row pointer per W samples): nw W, sw 1, si W, no transpose. */
typedef struct {
    const float *const *row;
    int nr, nw, sw, si;
} Bcast;

/* gw[i0 + ii][j0 + v W ...] += sum_s a(s, i0 + ii) b[s][j0 + v W ...] for ii < ni, v < nv: ni * nv
   sums in registers. tail > 0: only lanes tail.. of the one vector are added (the last columns, as
   the end of a vector that overlaps columns already done). */
static inline __attribute__((always_inline)) void dw_block(
        float *gw, const int ld, const Bcast a, const float *b, const int ldb,
        const int i0, const int j0, const int ni, const int nv, const int tail) {
    vf acc[8][4];
    for (int ii = 0; ii < ni; ++ii)
        for (int v = 0; v < nv; ++v)
            acc[ii][v] = tail ? SPLAT(0.0f) : loadu(gw + (long)(i0 + ii) * ld + j0 + v * W);
    for (int r = 0; r < a.nr; ++r) {
        const float *ar = a.row[r] + (long)i0 * a.si;
        const float *br = b + (long)r * a.nw * ldb + j0;
        for (int w = 0; w < a.nw; ++w) {
            vf bv[4];
            for (int v = 0; v < nv; ++v) bv[v] = loadu(br + (long)w * ldb + v * W);
            for (int ii = 0; ii < ni; ++ii) {
                const float ai = ar[(long)w * a.sw + (long)ii * a.si];
                for (int v = 0; v < nv; ++v) acc[ii][v] += ai * bv[v];
            }
        }
    }
    for (int ii = 0; ii < ni; ++ii) {
        float *g = gw + (long)(i0 + ii) * ld + j0;
        if (!tail)
            for (int v = 0; v < nv; ++v) storeu(g + v * W, acc[ii][v]);
        else
            for (int w = tail; w < W; ++w) g[w] += acc[ii][0][w];
    }
}

/* every row i of the columns j0 .. j0 + nv W (or the tail's), ni rows at a time */
static inline __attribute__((always_inline)) void dw_rows(
        float *gw, const int ld, const Bcast a, const int M, const float *b, const int ldb,
        const int j0, const int ni, const int nv, const int tail) {
    int i = 0;
    for (; i + ni <= M; i += ni) dw_block(gw, ld, a, b, ldb, i, j0, ni, nv, tail);
    if (ni > 4) for (; i + 4 <= M; i += 4) dw_block(gw, ld, a, b, ldb, i, j0, 4, nv, tail);
    if (ni > 2) for (; i + 2 <= M; i += 2) dw_block(gw, ld, a, b, ldb, i, j0, 2, nv, tail);
    for (; i < M; ++i) dw_block(gw, ld, a, b, ldb, i, j0, 1, nv, tail);
}

/* gw[i ld + j] += sum_s a(s, i) b[s ldb + j] for i < M, j < N, s over a's samples (b transposed).
   Column blocks of DW_NV vectors (6 rows), then 2 (DW_N2 rows), then 1 (8 rows), each with enough
   independent sums to hide the FMA latency; the last N mod W columns as the end of a vector ending
   at column N. AVX-512: 6 x 4 vectors of its 32 registers (4 x 4 was 1-10% slower a step at
   d_model 64-128 on a Zen 4 core), 8 x 2 where only 2 vectors remain (d_model 32: 4 x 2 made a
   step 8% slower); AVX2: 6 x 2 of 16 (4 x 3 left the compiler one register short, and it reloaded
   b's vectors for every row: 6 x 2 took dw_gemm at d_model 64 from 60-65 to 78-81 GFLOP/s on a
   Zen 3 core, sgemm there 94). */
#define DW_NV (W >= 16 ? 4 : 2)
#define DW_N2 (W >= 16 ? 8 : 4)
static inline __attribute__((always_inline)) void dw_core(
        float *gw, const int ld, const Bcast a, const int M, const float *b, const int ldb,
        const int N) {
    int j = 0;
    for (; j + DW_NV * W <= N; j += DW_NV * W) dw_rows(gw, ld, a, M, b, ldb, j, 6, DW_NV, 0);
    for (; j + 2 * W <= N; j += 2 * W) dw_rows(gw, ld, a, M, b, ldb, j, DW_N2, 2, 0);
    for (; j + W <= N; j += W) dw_rows(gw, ld, a, M, b, ldb, j, 8, 1, 0);
    if (j < N && N >= W) {
        dw_rows(gw, ld, a, M, b, ldb, N - W, 8, 1, j - (N - W));
        j = N;
    }
    for (; j < N; ++j)
        for (int i = 0; i < M; ++i) {
            float acc = 0.0f;
            for (int r = 0; r < a.nr; ++r)
                for (int w = 0; w < a.nw; ++w)
                    acc += a.row[r][(long)w * a.sw + (long)i * a.si] *
                           b[(long)(r * a.nw + w) * ldb + j];
            gw[(long)i * ld + j] += acc;
        }
}

/* dw_core on n samples transposed: a[s M + i] */
static __attribute__((unused)) void dw_gemm(float *gw, const int ld, const float *a, const int M,
                                            const float *b, const int ldb, const int N, const int n) {
    dw_core(gw, ld, (Bcast){&a, 1, n, M, 1}, M, b, ldb, N);
}

/* dw_core on nr rows of M lane vectors (W samples each) as the kernel keeps them: no transpose */
static __attribute__((unused)) void dw_lanes(float *gw, const int ld, const vf *const *rows,
                                             const int nr, const int M, const float *b,
                                             const int ldb, const int N) {
    dw_core(gw, ld, (Bcast){(const float *const *)rows, nr, W, 1, W}, M, b, ldb, N);
}


/* ---- parameters and buffers ---------------------------------------------------------------- */

/* One member's parameters (or, over its gradient buffer, their gradients: NULL where untrained) */
typedef struct {
    float *we, *wpos, *wu, *bu, *lnfw, *lnfb;
    float *lnw[NL], *lnb[NL], *wq[NL], *wk[NL], *wv[NL], *wo[NL], *bq[NL], *bk[NL], *bv[NL], *bo[NL];
} Net;

/* Where each parameter lives: in theta (SRC 0), in the frozen tensors (SRC 1) or nowhere. With
   fx == NULL only theta's parameters resolve: that is how a gradient buffer (shaped as theta) is
   resolved. */
#define AT(x, off) (SRC_##x == 0 ? th + (off) : SRC_##x == 1 && fx ? fx + (off) : NULL)

static void resolve(Net *n, float *th, float *fx) {
    n->we = AT(WE, OFF_WE), n->wpos = AT(WPOS, OFF_WPOS), n->wu = AT(WU, OFF_WU);
    n->bu = AT(BU, OFF_BU), n->lnfw = AT(LNFW, OFF_LNFW), n->lnfb = AT(LNFB, OFF_LNFB);
    for (int l = 0; l < NL; ++l) {
        n->lnw[l] = AT(LN1W, OFF_LN1W[l]), n->lnb[l] = AT(LN1B, OFF_LN1B[l]);
        n->wq[l] = AT(WQ, OFF_WQ[l]), n->wk[l] = AT(WK, OFF_WK[l]);
        n->wv[l] = AT(WV, OFF_WV[l]), n->wo[l] = AT(WO, OFF_WO[l]);
        n->bq[l] = AT(BQ, OFF_BQ[l]), n->bk[l] = AT(BK, OFF_BK[l]);
        n->bv[l] = AT(BV, OFF_BV[l]), n->bo[l] = AT(BO, OFF_BO[l]);
    }
}

static void resolve_grad(Net *n, float *g) { resolve(n, g, NULL); }

/* One call's arguments; mirrored field by field by listcopy.engine.kernel._Args. */
typedef struct {
    int64_t n_members;
    float *theta, *exp_avg, *exp_avg_sq;  /* (E, P) */
    const float *fixed;                   /* (E, F) frozen parameters that are not identities / 0 */
    const double *lr, *wd;                /* lr (E) or (E, lr_steps): step s of the call; wd (E) */
    int64_t lr_steps;
    const double *max_grad_norm;          /* (E) or NULL: clip each member's gradient norm (0: off) */
    const uint8_t *active;                /* (E); NULL: every member */
    const int64_t *tokens;                /* (N, T) */
    const int64_t *targets;               /* (N, L): targets at the output positions */
    int64_t n_rows;                       /* N */
    const int64_t *batches;               /* (E, n_batches, batch_size) rows (train, grad) */
    int64_t n_batches, batch_size, batch0, n_steps, step0;
    int64_t row0, row_count;              /* eval: rows row0 .. row0 + row_count - 1 */
    double *loss;                         /* (E): += each step's mean loss (train), each row's CE (eval) */
    int64_t *hits, *seq_hits;             /* (E) eval, added to */
    float *grad;                          /* (E, P) grad mode */
    float *logits;                        /* (E, N, L, V) eval, optional */
    int64_t n_threads;
} Args;

#define N1(flag, n) ((flag) ? (n) : 1)   /* an array's size where it is used, else 1 */

typedef struct {
    /* activations of one group of W sequences */
    vf R[NL + 1][T][D];            /* residual stream entering layer l (R[NL]: final) */
    vf X[XL][T][D], mu[XL][T], rs[XL][T];  /* LN(R[l]), its mean and 1/sigma */
    vf Q[NL][T][D], K[NL][T][D];
    vf Vv[N1(MAT_V, NL)][T][D];
    vf Z[N1(KEEP_Z, NL)][T][D];
    vf A[NL][T][T][H];             /* attention pattern, allowed (query, key) entries only */
    vf Xf[N1(LN, L)][D], muf[L], rsf[L];
    vf prob[L][V];                 /* exp(logit - max), then d loss / d logit */
    vf inv_sum[L];
    vf G[T][D];                    /* d loss / d R[l + 1] entering layer l's backward, d R[l] after */
    vf GX[T][D], GQ[T][D], GK[T][D], GV[T][D], GZ[D], GF[L][D];
    unsigned char fresh[3][T][H];  /* GQ, GK, GV's heads not written yet in this layer (not zeroed) */
    /* lane-expanded gradients of the small parameters, summed over lanes once per step */
    vf gpos[T][D], gbu[N1(TR(BU), V)], glnf[N1(TR(LNFW), 2)][D], gln[N1(TR(LN1W), NL)][2][D];
    vf gbq[N1(TR(BQ), NL)][D], gbk[N1(TR(BK), NL)][D], gbv[N1(TR(BV), NL)][D], gbo[N1(TR(BO), NL)][D];
#if DW_LANES
    vf gwq[N1(TR(WQ), NL)][D * D], gwk[N1(TR(WK), NL)][D * D];
    vf gwv[N1(TR(WV) && !FOLD, NL)][D * D], gwo[N1(GRAD_O, NL)][D * D], gwu[D * V];
#else
    float xs[L * W * D], gs[T * W * D];  /* rows transposed into samples */
    const vf *rows_a[T], *rows_b[T];
    float gwut[V * D];  /* W_U's gradient transposed, summed over the step's groups */
#endif
    /* FOLD: W_VO, its bias (b_V W_O + b_O) and their gradients, per member and step */
    float wvo[N1(FOLD, NL)][N1(FOLD, D * D)], bvo[N1(FOLD, NL)][D], gvo[N1(FOLD, NL)][N1(FOLD, D * D)];
    float tr[N1(FOLD, 2)][N1(FOLD, D * D)];  /* transposes for those products */
    vf gbvo[N1(GRAD_BVO, NL)][D];
    /* CONST: what every group's backward sends the constant rows (d R, and d Q, K, V at them),
       summed over the step's groups; part 1 takes them back once per step */
    vf sR[N1(NCONST, NL + 1)][N1(NCONST, T)][D], sQ[N1(NCONST, NL)][N1(NCONST, T)][D];
    vf sK[N1(NCONST, NL)][N1(NCONST, T)][D], sV[N1(NCONST, NL)][N1(NCONST, T)][D];
    vf valid;
    vi tgt[L];
    int64_t tok[T][W];
    float grad[P];
} Work;

/* The lanes heads_back adds weight x's gradient into (layer l, field g of the work buffers), or 0
   where x is not trained or the variant sums weight gradients over samples instead. */
#if DW_LANES
#define LANES(x, g, l) (TR(x) ? k->g[l] : 0)
#else
#define LANES(x, g, l) 0
#endif

#define XIN(k, l, t) (LN ? (k)->X[l][t] : (k)->R[l][t])  /* layer l's attention input at row t */
#define XFIN(k, o) (LN ? (k)->Xf[o] : (k)->R[NL][L + 1 + (o)])  /* the unembedding's input */

static void load_group(Work *k, const Args *a, const int64_t *rows, int64_t first, int n) {
    /* rows: the batch's row indices, or NULL for rows first, first + 1, ... */
    for (int w = 0; w < W; ++w) {
        const int64_t r = rows ? rows[w < n ? w : 0] : first + (w < n ? w : 0);
        k->valid[w] = w < n ? 1.0f : 0.0f;
        for (int t = 0; t < T; ++t) k->tok[t][w] = a->tokens[r * T + t];
        for (int o = 0; o < L; ++o) k->tgt[o][w] = (int32_t)a->targets[r * L + o];
    }
}

/* ---- forward --------------------------------------------------------------------------------- */

/* Sums and maxima over d_model and the vocabulary run in four interleaved parts (element m into
   part m % 4, combined pairwise at the end): one running sum is a chain of dependent operations,
   which the compiler may not reorder. The parts are indexed by j < 4 inside a loop over m in steps
   of 4, which keeps them in registers (indexed by m % 4 they stayed in memory). */
static inline vf sum_parts(const vf *p) { return (p[0] + p[1]) + (p[2] + p[3]); }

/* TransformerLens "LN": y = (x - mean) / sqrt(mean square + eps) * w + b */
static void layer_norm(vf *y, vf *mu, vf *rs, const vf *x, const float *w, const float *b) {
    vf s[4], v[4];
    for (int j = 0; j < 4; ++j) s[j] = v[j] = SPLAT(0.0f);
    int m = 0;
    for (; m + 4 <= D; m += 4)
        for (int j = 0; j < 4; ++j) s[j] += x[m + j];
    for (; m < D; ++m) s[0] += x[m];
    const vf mean = sum_parts(s) / (float)D;
    for (m = 0; m + 4 <= D; m += 4)
        for (int j = 0; j < 4; ++j) v[j] += (x[m + j] - mean) * (x[m + j] - mean);
    for (; m < D; ++m) v[0] += (x[m] - mean) * (x[m] - mean);
    const vf r = vrsqrt(sum_parts(v) / (float)D + LN_EPS);
    for (int m = 0; m < D; ++m) y[m] = (x[m] - mean) * r * w[m] + b[m];
    *mu = mean, *rs = r;
}

/* y (H heads of DH) = x @ w (H, D, DH) + b */
static __attribute__((noinline)) void heads_in(vf *y, const vf *x, const float *w, const float *b) {
    for (int h = 0; h < H; ++h) lmm(y + h * DH, x, w + h * D * DH, D, DH, DH, 1, b ? b + h * DH : 0, 0);
}

static void embed(Work *k, const Net *n, int part) {
    for (int t = 0; t < T; ++t) {
        if (!NEED[0][t] || !PART(0, t, part)) continue;
        const float *pos = n->wpos + t * D;
        int m = 0;
#if SHUFFLE_TRANSPOSE
        for (; m + W <= D; m += W) {  /* W lanes' embedding rows, W columns, transposed */
            vf x[W];
            for (int w = 0; w < W; ++w) x[w] = loadu(n->we + k->tok[t][w] * D + m);
            transpose_block(x);
            for (int c = 0; c < W; ++c) k->R[0][t][m + c] = x[c] + pos[m + c];
        }
#endif
        for (; m < D; ++m) {
            vf e;
            for (int w = 0; w < W; ++w) e[w] = n->we[k->tok[t][w] * D + m];
            k->R[0][t][m] = e + pos[m];
        }
    }
}

/* layer l's LayerNorm, queries, keys and values at the rows that need them */
static void project(Work *k, const Net *n, int l, int part) {
    for (int t = 0; t < T; ++t) {
        if (!(QROW[l][t] || KROW[l][t] || VROW[l][t]) || !PART(l, t, part)) continue;
        if (LN) layer_norm(k->X[l][t], &k->mu[l][t], &k->rs[l][t], k->R[l][t], n->lnw[l], n->lnb[l]);
        const vf *x = XIN(k, l, t);
        if (QROW[l][t]) heads_in(k->Q[l][t], x, n->wq[l], HAS(BQ) ? n->bq[l] : 0);
        if (KROW[l][t]) heads_in(k->K[l][t], x, n->wk[l], HAS(BK) ? n->bk[l] : 0);
        if (!MAT_V || !VROW[l][t]) continue;
        if (HAS(WV)) {
            heads_in(k->Vv[l][t], x, n->wv[l], HAS(BV) ? n->bv[l] : 0);
        } else {  /* W_V = eye(D, DH) per head: the first DH dims, plus b_V */
            for (int h = 0; h < H; ++h)
                for (int c = 0; c < DH; ++c) k->Vv[l][t][h * DH + c] = x[c] + n->bv[l][h * DH + c];
        }
    }
}

/* the matrix z multiplies: W_O, or W_VO where folded */
#define OMAT(k, n, l) (FOLD ? (const float *)(k)->wvo[l] : (n)->wo[l])

#if FOLD
static void transpose(float *dst, const float *src) {  /* D x D */
    for (int i = 0; i < D; ++i)
        for (int j = 0; j < D; ++j) dst[j * D + i] = src[i * D + j];
}

/* W_VO = W_V W_O and b_VO = b_V W_O + b_O of every layer, from this step's parameters */
static void fold_vo(Work *k, const Net *n) {
    for (int l = 0; l < NL; ++l) {
        memset(k->wvo[l], 0, sizeof k->wvo[l]);
        transpose(k->tr[0], n->wv[l]);
        dw_gemm(k->wvo[l], D, k->tr[0], D, n->wo[l], D, D, D);
        if (!HAS(BV)) continue;
        for (int j = 0; j < D; ++j) k->bvo[l][j] = HAS(BO) ? n->bo[l][j] : 0.0f;
        for (int c = 0; c < D; ++c)
            for (int j = 0; j < D; ++j) k->bvo[l][j] += n->bv[l][c] * n->wo[l][c * D + j];
    }
}

/* W_VO's gradient G and b_VO's g (lane-expanded) into W_V's (G W_O^T), W_O's (W_V^T G + b_V^T g)
   and b_V's (g W_O^T) */
static void unfold_grad(Work *k, const Net *n, const Net *gn) {
    for (int l = 0; l < NL; ++l) {
        const float *G = k->gvo[l], *wv = n->wv[l], *wo = n->wo[l];
        float *wot = k->tr[0], gb[D];
        for (int j = 0; j < D; ++j) gb[j] = GRAD_BVO ? lane_sum(k->gbvo[l][j]) : 0.0f;
        transpose(wot, wo);
        if (TR(WV)) {
            transpose(k->tr[1], G);
            dw_gemm(gn->wv[l], D, k->tr[1], D, wot, D, D, D);
        }
        if (TR(WO)) dw_gemm(gn->wo[l], D, wv, D, G, D, D, D);
        if (TR(WO) && HAS(BV))
            for (int c = 0; c < D; ++c)
                for (int j = 0; j < D; ++j) gn->wo[l][c * D + j] += n->bv[l][c] * gb[j];
        if (TR(BV))
            for (int j = 0; j < D; ++j)
                for (int c = 0; c < D; ++c) gn->bv[l][c] += gb[j] * wot[j * D + c];
    }
}
#endif

#define VAL(k, l, j, h, c) (MAT_V ? (k)->Vv[l][j][(h) * DH + (c)] : XIN(k, l, j)[c])
#define VALS(k, l, j, h) (MAT_V ? (k)->Vv[l][j] + (h) * DH : XIN(k, l, j))  /* &VAL(.., 0) */

/* dst (DH) = a b + 0 (as if added to zero: a -0 product becomes +0); not inlined, so that the
   compiler does not take a b out of it and axpy_head's, unfusing the latter's multiply-add */
static __attribute__((noinline)) void mul_head(vf *dst, const vf a, const vf *b) {
    for (int c = 0; c < DH; ++c) dst[c] = a * b[c] + SPLAT(0.0f);
}

/* dst (DH) += a b, or = a b where *fresh (then no longer) */
static inline void axpy_head(vf *dst, unsigned char *fresh, const vf a, const vf *b) {
    if (*fresh)
        mul_head(dst, a, b);
    else
        for (int c = 0; c < DH; ++c) dst[c] += a * b[c];
    *fresh = 0;
}

/* z (H heads of DH) of row i in layer l: the pattern (kept in k->A) times the values */
static void attend_row(Work *k, int l, int i, vf *z) {
    if (NKEY[l][i] == 0) {  /* receives nothing */
        for (int c = 0; c < D; ++c) z[c] = SPLAT(0.0f);
        return;
    }
    for (int h = 0; h < H; ++h) {
        vf s[T], mx = SPLAT(-INFINITY), sum = SPLAT(0.0f);
        if (NKEY[l][i] == 1) {  /* the pattern is exactly 1 on the one key */
            for (int j = 0; j < T; ++j) s[j] = SPLAT(ALLOW[l][i][j] ? 1.0f : 0.0f);
            sum = SPLAT(1.0f);
        } else {
            for (int j = 0; j < T; ++j) {
                if (!ALLOW[l][i][j]) continue;
                vf acc = SPLAT(0.0f);
                for (int c = 0; c < DH; ++c) acc += k->Q[l][i][h * DH + c] * k->K[l][j][h * DH + c];
                s[j] = acc / SQRT_DH;
                mx = vmax(s[j], mx);
            }
            for (int j = 0; j < T; ++j) {
                if (!ALLOW[l][i][j]) continue;
                s[j] = vexp(s[j] - mx);
                sum += s[j];
            }
        }
        unsigned char first = 1;  /* the first key's written, the others' added */
        for (int j = 0; j < T; ++j) {
            if (!ALLOW[l][i][j]) continue;
            const vf p = s[j] / sum;
            k->A[l][i][j][h] = p;
            axpy_head(z + h * DH, &first, p, VALS(k, l, j, h));
        }
    }
}

/* part 0: the rows that differ between sequences (the constant rows' activations, left in k by
   part 1, are read, never written); part 1: the constant rows */
static void forward(Work *k, const Net *n, int part) {
    embed(k, n, part);
    for (int l = 0; l < NL; ++l) {
        project(k, n, l, part);
        for (int i = 0; i < T; ++i) {
            if (!NEED[l + 1][i] || !PART(l + 1, i, part)) continue;
            vf z[D], out[D];
            attend_row(k, l, i, z);
            if (KEEP_Z) memcpy(k->Z[l][i], z, sizeof z);
            const float *bo = FOLD && HAS(BV) && NKEY[l][i] ? k->bvo[l] : HAS(BO) ? n->bo[l] : 0;
            if (HAS(WO)) {
                lmm(out, z, OMAT(k, n, l), D, D, D, 1, bo, 0);
            } else {  /* W_O = eye(DH, D) per head: heads summed into the first DH dims */
                for (int m = 0; m < D; ++m) {
                    vf acc = bo ? SPLAT(bo[m]) : SPLAT(0.0f);
                    for (int h = 0; m < DH && h < H; ++h) acc += z[h * DH + m];
                    out[m] = acc;
                }
            }
            for (int m = 0; m < D; ++m) k->R[l + 1][i][m] = k->R[l][i][m] + out[m];
        }
    }
}

/* logits of output position o into k->prob[o] (V) */
static void unembed(Work *k, const Net *n, int o) {
    if (LN) layer_norm(k->Xf[o], &k->muf[o], &k->rsf[o], k->R[NL][L + 1 + o], n->lnfw, n->lnfb);
    lmm(k->prob[o], XFIN(k, o), n->wu, D, V, V, 1, HAS(BU) ? n->bu : 0, 0);
}

/* cross-entropy of output position o, summed over valid lanes; leaves exp(logit - max) in
   k->prob[o] and 1 / sum in k->inv_sum[o] for ce_backward; counts hits when asked */
static double softmax_ce(Work *k, int o, int64_t *hits, uint8_t *right) {
    const vi tgt = k->tgt[o];
    vf *logit = k->prob[o];
    vf tl = SPLAT(0.0f), sum = SPLAT(0.0f), part[4];  /* four maxima (see sum_parts) */
    for (int j = 0; j < 4; ++j) part[j] = SPLAT(-INFINITY);
    int v0 = 0;
    for (; v0 + 4 <= V; v0 += 4)
        for (int j = 0; j < 4; ++j) part[j] = vmax(logit[v0 + j], part[j]);
    for (; v0 < V; ++v0) part[0] = vmax(logit[v0], part[0]);
    const vf mx = vmax(vmax(part[0], part[1]), vmax(part[2], part[3]));
    for (int w = 0; w < W; ++w)  /* the target's logit (0 for a target outside the vocabulary) */
        if ((uint32_t)tgt[w] < (uint32_t)V) tl[w] = logit[tgt[w]][w];
    if (hits) {  /* the prediction, as torch.argmax: the first index that holds the maximum */
        vi arg = tgt - tgt;  /* 0 where none does (every logit NaN) */
        /* downwards, so that the last match is the first index: each comparison is against mx,
           not against a running best, and none waits for another (a chain of compare and select
           over the vocabulary made the evaluation 4-17% slower) */
        for (int v = V - 1; v >= 0; --v) {
            const vi at = logit[v] == mx;
            arg = (at & v) | (~at & arg);
        }
        for (int w = 0; w < W; ++w) {
            if (k->valid[w] == 0.0f) continue;
            const int ok = arg[w] == tgt[w];
            *hits += ok;
            right[w] &= ok;
        }
    }
    for (int v = 0; v < V; ++v) {
        logit[v] = vexp(logit[v] - mx);
        sum += logit[v];
    }
    k->inv_sum[o] = 1.0f / sum;
    double loss = 0.0;
    for (int w = 0; w < W; ++w)
        if (k->valid[w] != 0.0f) loss += (double)(logf(sum[w]) + mx[w] - tl[w]);
    return loss;
}

/* ---- backward -------------------------------------------------------------------------------- */

/* element m's terms of layer_norm_back's two sums (into s1, s2) and its weight gradients */
static inline __attribute__((always_inline)) void ln_back_terms(
        vf *s1, vf *s2, int m, const vf *gy, const vf *x, vf mu, vf rs, const float *w, vf *gw,
        vf *gb) {
    const vf xhat = (x[m] - mu) * rs, g = gy[m] * w[m];
    *s1 += g, *s2 += g * xhat;
    if (gw) gw[m] += gy[m] * xhat, gb[m] += gy[m];
}

/* gx += (d LN / d x)^T gy at x (mean mu, 1/sigma rs); gw += gy * xhat, gb += gy (lane-expanded) */
static void layer_norm_back(vf *gx, const vf *gy, const vf *x, vf mu, vf rs, const float *w,
                            vf *gw, vf *gb) {
    vf p1[4], p2[4];  /* the two sums' parts (see sum_parts) */
    for (int j = 0; j < 4; ++j) p1[j] = p2[j] = SPLAT(0.0f);
    int m = 0;
    for (; m + 4 <= D; m += 4)
        for (int j = 0; j < 4; ++j) ln_back_terms(&p1[j], &p2[j], m + j, gy, x, mu, rs, w, gw, gb);
    for (; m < D; ++m) ln_back_terms(&p1[0], &p2[0], m, gy, x, mu, rs, w, gw, gb);
    const vf s1 = sum_parts(p1) / (float)D, s2 = sum_parts(p2) / (float)D;
    for (int m = 0; m < D; ++m) gx[m] += rs * (gy[m] * w[m] - s1 - (x[m] - mu) * rs * s2);
}

/* gradient of the mean cross-entropy (g_scale = 1 / (B L)) w.r.t. the logits (into k->prob), the
   unembedding's input (into k->G at the outputs) and the lane-expanded small parameters */
static void ce_backward(Work *k, const Net *n, const Net *gn, float g_scale) {
    const vf hit = g_scale * k->valid;
    for (int o = 0; o < L; ++o) {
        const vf scale = hit * k->inv_sum[o];
        vf *p = k->prob[o];
        for (int v = 0; v < V; ++v) {
            p[v] *= scale;
            if (TR(BU)) k->gbu[v] += p[v];
        }
        for (int w = 0; w < W; ++w) {  /* minus the one-hot target, lane by lane */
            const int32_t t = k->tgt[o][w];
            if ((uint32_t)t >= (uint32_t)V) continue;
            p[t][w] -= hit[w];
            if (TR(BU)) k->gbu[t][w] -= hit[w];
        }
        vf *gr = k->G[L + 1 + o];
        lmm(LN ? k->GF[o] : gr, k->prob[o], n->wu, V, D, 1, V, 0, 0);
#if DW_LANES
        dw_lane(k->gwu, XFIN(k, o), k->prob[o], D, V, V, 1);
#endif
        if (LN) {
            for (int m = 0; m < D; ++m) gr[m] = SPLAT(0.0f);
            layer_norm_back(gr, k->GF[o], k->R[NL][L + 1 + o], k->muf[o], k->rsf[o], n->lnfw,
                            TR(LNFW) ? k->glnf[0] : 0, TR(LNFW) ? k->glnf[1] : 0);
        }
    }
#if !DW_LANES
    for (int o = 0; o < L; ++o) k->rows_a[o] = XFIN(k, o), k->rows_b[o] = k->prob[o];
    gather(k->xs, k->rows_a, L, D);  /* the inputs transposed, not the V-wide gradients */
    dw_lanes(k->gwut, D, k->rows_b, L, V, k->xs, D, D);  /* summed into W_U's by reduce */
#endif
    (void)gn;
}

/* d / d z of row i in layer l from gout (d / d its attention output): through W_O or W_VO (whose
   gradient it adds to, lane by lane) or its identity */
static void back_mix(Work *k, const Net *n, int l, int i, const vf *gout, vf *gz) {
    if (HAS(WO)) {
        lmm(gz, gout, OMAT(k, n, l), D, D, 1, D, 0, 0);
    } else {
        for (int h = 0; h < H; ++h)
            for (int c = 0; c < DH; ++c) gz[h * DH + c] = gout[c];
    }
#if DW_LANES
    if (GRAD_O) dw_lane(k->gwo[l], k->Z[l][i], gout, D, D, D, 1);
#else
    (void)k, (void)i;
#endif
}

/* row t's head slices that nothing has written in this layer, zeroed (g: GQ, GK or GV's row) */
static void settle(vf *g, unsigned char *fresh) {
    for (int h = 0; h < H; ++h)
        if (fresh[h]) memset(g + h * DH, 0, sizeof(vf) * DH), fresh[h] = 0;
}

/* row i's attention backward in layer l, from gz: into GV (values), GQ and GK */
static void back_attention(Work *k, int l, int i, const vf *gz) {
    unsigned char(*const fq)[H] = k->fresh[0], (*const fk)[H] = k->fresh[1];
    unsigned char(*const fv)[H] = k->fresh[2];
    for (int h = 0; h < H; ++h) {
        if (NKEY[l][i] == 1) {
            for (int j = 0; j < T; ++j)
                if (ALLOW[l][i][j]) axpy_head(k->GV[j] + h * DH, &fv[j][h], SPLAT(1.0f), gz + h * DH);
            continue;
        }
        vf gp[T], dot = SPLAT(0.0f);
        for (int j = 0; j < T; ++j) {
            if (!ALLOW[l][i][j]) continue;
            const vf p = k->A[l][i][j][h];
            vf acc = SPLAT(0.0f);
            for (int c = 0; c < DH; ++c) acc += gz[h * DH + c] * VAL(k, l, j, h, c);
            axpy_head(k->GV[j] + h * DH, &fv[j][h], p, gz + h * DH);
            gp[j] = acc;
            dot += p * acc;
        }
        for (int j = 0; j < T; ++j) {
            if (!ALLOW[l][i][j]) continue;
            const vf gs = k->A[l][i][j][h] * (gp[j] - dot) / SQRT_DH;
            axpy_head(k->GQ[i] + h * DH, &fq[i][h], gs, k->K[l][j] + h * DH);
            axpy_head(k->GK[j] + h * DH, &fk[j][h], gs, k->Q[l][i] + h * DH);
        }
    }
}

/* gx (+)= g (H heads of DH) @ w^T (w: H, D, DH), added to gx where add; lane by lane, w's
   gradient += x g */
static __attribute__((noinline)) void heads_back(vf *gx, const vf *g, const float *w, const vf *x, vf *gw,
                                                 int add) {
    for (int h = 0; h < H; ++h) lmm(gx, g + h * DH, w + h * D * DH, DH, D, 1, DH, 0, add || h);
#if DW_LANES
    if (gw)
        for (int h = 0; h < H; ++h) dw_lane(gw + h * D * DH, x, g + h * DH, D, DH, DH, 1);
#else
    (void)x, (void)gw;
#endif
}

static inline void add_rows(vf *acc, const vf *g, int n) {
    for (int c = 0; c < n; ++c) acc[c] += g[c];
}

/* layer l's values, queries and keys back to its input (through LayerNorm), added to k->G; in part 0
   a constant row's are summed for part 1 instead */
static void back_project(Work *k, const Net *n, int l, int part) {
    for (int t = 0; t < T; ++t) {
        if (!(QROW[l][t] || KROW[l][t] || VROW[l][t])) continue;
        settle(k->GQ[t], k->fresh[0][t]), settle(k->GK[t], k->fresh[1][t]);
        settle(k->GV[t], k->fresh[2][t]);
#if NCONST
        if (CONST_ROW(l, t) && !part) {
            if (QROW[l][t]) add_rows(k->sQ[l][t], k->GQ[t], D);
            if (KROW[l][t]) add_rows(k->sK[l][t], k->GK[t], D);
            if (VROW[l][t]) add_rows(k->sV[l][t], k->GV[t], D);
            continue;
        }
        if (!PART(l, t, part)) continue;
#endif
        vf *gx = LN ? k->GX[t] : k->G[t];
        int add = !LN;  /* GX[t] is written by the first product, G[t] (the residual's) added to */
        const vf *x = XIN(k, l, t);
        if (VROW[l][t]) {
            if (TR(BV) && !FOLD) add_rows(k->gbv[l], k->GV[t], D);
            if (HAS(WV) && !FOLD) {
                heads_back(gx, k->GV[t], n->wv[l], x, LANES(WV, gwv, l), add);
            } else {  /* W_V = eye(D, DH) per head: the heads' gradients into the first DH dims */
                if (add) {
                    add_rows(gx, k->GV[t], DH);
                } else {
                    memcpy(gx, k->GV[t], sizeof(vf) * DH);
                    if (D > DH) memset(gx + DH, 0, sizeof(vf) * (D - DH));
                }
                for (int h = 1; h < H; ++h) add_rows(gx, k->GV[t] + h * DH, DH);
            }
            add = 1;
        }
        if (QROW[l][t]) {
            if (TR(BQ)) add_rows(k->gbq[l], k->GQ[t], D);
            heads_back(gx, k->GQ[t], n->wq[l], x, LANES(WQ, gwq, l), add);
            add = 1;
        }
        if (KROW[l][t]) {
            if (TR(BK)) add_rows(k->gbk[l], k->GK[t], D);
            heads_back(gx, k->GK[t], n->wk[l], x, LANES(WK, gwk, l), add);
        }
        if (LN)
            layer_norm_back(k->G[t], k->GX[t], k->R[l][t], k->mu[l][t], k->rs[l][t], n->lnw[l],
                            TR(LN1W) ? k->gln[l][0] : 0, TR(LN1W) ? k->gln[l][1] : 0);
    }
}

#if !DW_LANES
/* gw (H heads of D x DH) += a^T b per head, for rows_a (as they are) and rows_b (transposed),
   nr rows each */
static void dw_heads(Work *k, float *gw, int nr) {
    if (!nr) return;
    gather(k->gs, k->rows_b, nr, D);
    for (int h = 0; h < H; ++h)
        dw_lanes(gw + h * D * DH, DH, k->rows_a, nr, D, k->gs + h * DH, D, DH);
}

/* layer l's weight gradients from this group (part 0) or the constant rows (part 1): the rows'
   inputs times their gradients */
static void dw_layer(Work *k, const Net *gn, int l, int part) {
    for (int which = 0; which < 3; ++which) {
        const unsigned char *sel = which == 0 ? QROW[l] : which == 1 ? KROW[l] : VROW[l];
        float *gw = which == 0 ? gn->wq[l] : which == 1 ? gn->wk[l] : gn->wv[l];
        if (!gw || (which == 2 && (!HAS(WV) || FOLD))) continue;
        int nr = 0;
        for (int t = 0; t < T; ++t) {
            if (!sel[t] || !PART(l, t, part)) continue;
            k->rows_a[nr] = XIN(k, l, t);
            k->rows_b[nr++] = which == 0 ? k->GQ[t] : which == 1 ? k->GK[t] : k->GV[t];
        }
        dw_heads(k, gw, nr);
    }
}

/* W_O's (or W_VO's) gradient from this group or the constant rows: z times the gradient of the
   layer's output, read from k->G before back_project adds to it */
static void dw_out(Work *k, const Net *gn, int l, int part) {
    if (!GRAD_O) return;
    int nr = 0;
    for (int i = 0; i < T; ++i) {
        if (!NEED[l + 1][i] || !NKEY[l][i] || !PART(l + 1, i, part)) continue;
        k->rows_a[nr] = k->Z[l][i];
        k->rows_b[nr++] = k->G[i];
    }
    if (!nr) return;
    gather(k->gs, k->rows_b, nr, D);
    dw_lanes(FOLD ? k->gvo[l] : gn->wo[l], D, k->rows_a, nr, D, k->gs, D, D);
}
#endif

/* layer l backward: k->G holds d loss / d R[l + 1] at NEED[l + 1]; leaves d loss / d R[l] there
   (in place: a row's starts as its output's, the residual, and the rest is added to it). Part 0
   (a group) sends whatever reaches a constant row to the step's sums; part 1 (the constant rows,
   once per step) starts from those sums: the backward is linear in them, and a constant row's
   activations are the same in every sequence. */
static void backward_layer(Work *k, const Net *n, const Net *gn, int l, int part) {
    for (int t = 0; t < T; ++t) {
        if (!NEED[l][t]) continue;
        if (!NEED[l + 1][t]) memset(k->G[t], 0, sizeof k->G[t]);  /* nothing from above */
        const int sums = NCONST && part && CONST_ROW(l, t);  /* start from the step's sums */
        memset(k->fresh[0][t], QROW[l][t] && !sums, H), memset(k->fresh[1][t], KROW[l][t] && !sums, H);
        memset(k->fresh[2][t], VROW[l][t] && !sums, H);
#if NCONST
        if (sums) {
            if (QROW[l][t]) memcpy(k->GQ[t], k->sQ[l][t], sizeof k->GQ[t]);
            if (KROW[l][t]) memcpy(k->GK[t], k->sK[l][t], sizeof k->GK[t]);
            if (VROW[l][t]) memcpy(k->GV[t], k->sV[l][t], sizeof k->GV[t]);
        }
#endif
    }
    for (int i = 0; i < T; ++i) {
        if (!NEED[l + 1][i]) continue;
#if NCONST
        if (CONST_ROW(l + 1, i)) {
            if (!part) {  /* sent to the sums, not to this part's input */
                add_rows(k->sR[l + 1][i], k->G[i], D);
                memset(k->G[i], 0, sizeof k->G[i]);
                continue;
            }
            add_rows(k->G[i], k->sR[l + 1][i], D);
        } else if (part) {
            memset(k->G[i], 0, sizeof k->G[i]);
            continue;
        }
#endif
        const vf *gout = k->G[i];  /* also the residual's share of d R[l][i], left in place */
        if (TR(BO)) add_rows(k->gbo[l], gout, D);
        if (!NKEY[l][i]) continue;  /* z = 0 */
        if (GRAD_BVO) add_rows(k->gbvo[l], gout, D);
        vf gz[D];
        back_mix(k, n, l, i, gout, gz);
        back_attention(k, l, i, gz);
    }
#if !DW_LANES
    dw_out(k, gn, l, part);
#endif
    back_project(k, n, l, part);
#if NCONST
    for (int t = 0; t < T; ++t)  /* the residual a varying row sends its constant input */
        if (!part && NEED[l][t] && CONST_ROW(l, t)) {
            add_rows(k->sR[l][t], k->G[t], D);
            memset(k->G[t], 0, sizeof k->G[t]);
        }
#endif
#if !DW_LANES
    dw_layer(k, gn, l, part);
#else
    (void)gn;
#endif
}

static void embed_back(Work *k, const Net *gn, int part) {
    for (int t = 0; t < T; ++t) {
        if (!NEED[0][t] || !PART(0, t, part)) continue;
        add_rows(k->gpos[t], k->G[t], D);
        int m = 0;
#if SHUFFLE_TRANSPOSE
        for (; m + W <= D; m += W) {  /* W columns transposed into the lanes' rows, lane by lane */
            vf x[W];
            memcpy(x, k->G[t] + m, sizeof x);
            transpose_block(x);
            for (int w = 0; w < W; ++w) {
                if (k->valid[w] == 0.0f) continue;
                float *g = gn->we + k->tok[t][w] * D + m;
                storeu(g, loadu(g) + x[w]);
            }
        }
#endif
        for (int w = 0; w < W; ++w) {
            if (k->valid[w] == 0.0f) continue;
            float *g = gn->we + k->tok[t][w] * D;
            for (int c = m; c < D; ++c) g[c] += k->G[t][c][w];
        }
    }
}

/* ---- one member: gradient, AdamW, evaluation --------------------------------------------------- */

static void zero_accumulators(Work *k) {
    memset(k->gpos, 0, sizeof k->gpos), memset(k->gbu, 0, sizeof k->gbu);
    memset(k->glnf, 0, sizeof k->glnf), memset(k->gln, 0, sizeof k->gln);
    memset(k->gbq, 0, sizeof k->gbq), memset(k->gbk, 0, sizeof k->gbk);
    memset(k->gbv, 0, sizeof k->gbv), memset(k->gbo, 0, sizeof k->gbo);
#if DW_LANES
    memset(k->gwq, 0, sizeof k->gwq), memset(k->gwk, 0, sizeof k->gwk);
    memset(k->gwv, 0, sizeof k->gwv), memset(k->gwo, 0, sizeof k->gwo);
    memset(k->gwu, 0, sizeof k->gwu);
#else
    memset(k->gwut, 0, sizeof k->gwut);
#endif
    if (FOLD) memset(k->gvo, 0, sizeof k->gvo);
    if (GRAD_BVO) memset(k->gbvo, 0, sizeof k->gbvo);
#if NCONST
    for (int l = 0; l <= NL; ++l)  /* the constant rows' sums only */
        for (int t = 0; t < T; ++t) {
            if (!CONST_ROW(l, t)) continue;
            memset(k->sR[l][t], 0, sizeof k->sR[l][t]);
            if (l == NL) continue;
            if (QROW[l][t]) memset(k->sQ[l][t], 0, sizeof k->sQ[l][t]);
            if (KROW[l][t]) memset(k->sK[l][t], 0, sizeof k->sK[l][t]);
            if (VROW[l][t]) memset(k->sV[l][t], 0, sizeof k->sV[l][t]);
        }
#endif
}

#if SHUFFLE_TRANSPOSE
/* lane_sum of W vectors at once, in the same order (bit for bit): each stage of transpose_block's
   shuffles pairs the vectors and adds the upper half of every block to its lower half, so that the
   result's lane j holds the sum of x[bit-reversed j] */
static inline __attribute__((always_inline)) vf lane_sums(vf *x) {
#pragma GCC unroll 8
    for (int s = 0, n = W / 2; s < LOG2W; ++s, n /= 2)
#pragma GCC unroll 16
        for (int i = 0; i < n; ++i)
            x[i] = __builtin_shuffle(x[2 * i], x[2 * i + 1], TMASK[s][0]) +
                   __builtin_shuffle(x[2 * i], x[2 * i + 1], TMASK[s][1]);
    return x[0];
}

static int bit_reversed(int j) {
    int r = 0;
    for (int b = 1; b < W; b *= 2) r = r * 2 + !!(j & b);
    return r;
}
#endif

static void reduce_into(float *g, const vf *acc, int n) {
    if (!g) return;
    int p = 0;
#if SHUFFLE_TRANSPOSE
    for (; p + W <= n; p += W) {
        vf x[W];
        for (int j = 0; j < W; ++j) x[j] = acc[p + bit_reversed(j)];
        storeu(g + p, loadu(g + p) + lane_sums(x));
    }
#endif
    for (; p < n; ++p) g[p] += lane_sum(acc[p]);
}

/* the lane-expanded accumulators summed over lanes into the gradient */
static void reduce(Work *k, const Net *gn) {
    reduce_into(gn->wpos, &k->gpos[0][0], T * D);
    if (TR(BU)) reduce_into(gn->bu, k->gbu, V);
    if (TR(LNFW)) reduce_into(gn->lnfw, k->glnf[0], D), reduce_into(gn->lnfb, k->glnf[1], D);
    for (int l = 0; l < NL; ++l) {
        if (TR(LN1W)) reduce_into(gn->lnw[l], k->gln[l][0], D), reduce_into(gn->lnb[l], k->gln[l][1], D);
        if (TR(BQ)) reduce_into(gn->bq[l], k->gbq[l], D);
        if (TR(BK)) reduce_into(gn->bk[l], k->gbk[l], D);
        if (TR(BV)) reduce_into(gn->bv[l], k->gbv[l], D);
        if (TR(BO)) reduce_into(gn->bo[l], k->gbo[l], D);
#if DW_LANES
        if (TR(WQ)) reduce_into(gn->wq[l], k->gwq[l], D * D);
        if (TR(WK)) reduce_into(gn->wk[l], k->gwk[l], D * D);
        if (TR(WV) && !FOLD) reduce_into(gn->wv[l], k->gwv[l], D * D);
        if (GRAD_O) reduce_into(FOLD ? k->gvo[l] : gn->wo[l], k->gwo[l], D * D);
#endif
    }
#if DW_LANES
    reduce_into(gn->wu, k->gwu, D * V);
#else
    for (int m = 0; m < D; ++m)
        for (int v = 0; v < V; ++v) gn->wu[m * V + v] += k->gwut[v * D + m];
#endif
}

/* CONST: the constant rows' activations (part 1), from the first sequence (rows, or row first),
   left in k for every group of the step (their gradient sums are zeroed with the accumulators) */
static void const_forward(Work *k, const Args *a, const Net *n, const int64_t *rows, int64_t first) {
#if NCONST
    load_group(k, a, rows, first, 1);
    forward(k, n, 1);
#else
    (void)k, (void)a, (void)n, (void)rows, (void)first;
#endif
}

#if NCONST
/* CONST: the constant rows' backward, once per step, from what every group sent them */
static void const_backward(Work *k, const Net *n, const Net *gn) {
    k->valid = SPLAT(1.0f);  /* every lane holds a share of the sums */
    memset(k->G, 0, sizeof k->G);
    for (int l = NL - 1; l >= 0; --l) backward_layer(k, n, gn, l, 1);
    for (int t = 0; t < T; ++t)
        if (NEED[0][t] && CONST_ROW(0, t)) add_rows(k->G[t], k->sR[0][t], D);
    embed_back(k, gn, 1);
}
#endif

/* loss (mean over the batch's output tokens) and gradient of one member on one batch */
static double member_grad(Work *k, const Args *a, const Net *n, const int64_t *rows, float *grad) {
    const int64_t B = a->batch_size;
    const float g_scale = 1.0f / (float)(B * L);
    Net gn;
    resolve_grad(&gn, grad);
    zero_accumulators(k);
    memset(grad, 0, sizeof(float) * P);
#if FOLD
    fold_vo(k, n);
#endif
    const_forward(k, a, n, rows, 0);
    double loss = 0.0;
    for (int64_t b = 0; b < B; b += W) {
        const int nw = B - b < W ? (int)(B - b) : W;
        load_group(k, a, rows + b, 0, nw);
        forward(k, n, 0);
        for (int o = 0; o < L; ++o) {
            unembed(k, n, o);
            loss += softmax_ce(k, o, NULL, NULL);
        }
        ce_backward(k, n, &gn, g_scale);
        for (int l = NL - 1; l >= 0; --l) backward_layer(k, n, &gn, l, 0);
        embed_back(k, &gn, 0);
    }
#if NCONST
    const_backward(k, n, &gn);
#endif
    reduce(k, &gn);
#if FOLD
    unfold_grad(k, n, &gn);
#endif
    return loss / (double)(B * L);
}

/* torch.nn.utils.clip_grad_norm_ over all of a member's trained parameters (max_norm > 0) */
static void clip(float *g, double max_norm) {
    if (!(max_norm > 0.0)) return;
    double s = 0.0;
    for (int p = 0; p < P; ++p) s += (double)g[p] * (double)g[p];
    const float coef = (float)max_norm / ((float)sqrt(s) + 1e-6f);
    if (coef < 1.0f)
        for (int p = 0; p < P; ++p) g[p] *= coef;
}

/* torch.optim.AdamW (single tensor, betas (0.9, 0.999), eps 1e-8) on one member's P parameters */
static void adamw(float *th, const float *g, float *m1, float *m2, int64_t step, double lr, double wd) {
    const double bc1 = 1.0 - pow(0.9, (double)step);
    const float bc2_sqrt = (float)sqrt(1.0 - pow(0.999, (double)step));
    const float decay = (float)(1.0 - lr * wd);
    const float step_size = (float)(-lr / bc1);
    for (int p = 0; p < P; ++p) {
        const float gp = g[p];
        const float m = m1[p] + 0.1f * (gp - m1[p]);
        const float v = m2[p] * 0.999f + 0.001f * gp * gp;
        const float denom = sqrtf(v) / bc2_sqrt + 1e-8f;
        /* param.mul_(decay).addcdiv_(exp_avg, denom, value=-step_size) */
        th[p] = th[p] * decay + step_size * m / denom;
        m1[p] = m;
        m2[p] = v;
    }
}

typedef struct {
    const Args *a;
    enum lc_mode mode;
    int64_t next;
} Job;

static void member_net(Net *n, const Args *a, int64_t e) {
    resolve(n, a->theta + e * P, NFIX ? (float *)a->fixed + e * NFIX : NULL);
}

/* n_steps AdamW steps of member e; each step's mean loss is added to a->loss[e] */
static void train_member(const Args *a, int64_t e, Work *k) {
    Net n;
    member_net(&n, a, e);
    for (int64_t s = 0; s < a->n_steps; ++s) {
        const int64_t bi = (a->batch0 + s) % a->n_batches;
        const int64_t *rows = a->batches + (e * a->n_batches + bi) * a->batch_size;
        a->loss[e] += member_grad(k, a, &n, rows, k->grad);
        if (a->max_grad_norm) clip(k->grad, a->max_grad_norm[e]);
        const double lr = a->lr_steps ? a->lr[e * a->lr_steps + s] : a->lr[e];
        adamw(a->theta + e * P, k->grad, a->exp_avg + e * P, a->exp_avg_sq + e * P, a->step0 + s + 1,
              lr, a->wd[e]);
    }
}

/* summed cross-entropy, token hits and sequence hits of member e on its rows, added to a->loss,
   a->hits, a->seq_hits (group by group: any split of the rows into W-aligned calls sums alike) */
static void eval_member(const Args *a, int64_t e, Work *k) {
    Net n;
    member_net(&n, a, e);
#if FOLD
    fold_vo(k, &n);
#endif
    if (a->row_count > 0) const_forward(k, a, &n, NULL, a->row0);
    const int64_t end = a->row0 + a->row_count;
    for (int64_t b = a->row0; b < end; b += W) {
        const int nw = end - b < W ? (int)(end - b) : W;
        int64_t hits = 0;
        uint8_t right[W];
        memset(right, 1, sizeof right);
        load_group(k, a, NULL, b, nw);
        forward(k, &n, 0);
        for (int o = 0; o < L; ++o) {
            unembed(k, &n, o);
            if (a->logits) {
                float *dst = a->logits + ((e * a->n_rows + b) * L + o) * V;
                for (int w = 0; w < nw; ++w)
                    for (int v = 0; v < V; ++v) dst[(int64_t)w * L * V + v] = k->prob[o][v][w];
            }
            a->loss[e] += softmax_ce(k, o, &hits, right);
        }
        a->hits[e] += hits;
        for (int w = 0; w < nw; ++w) a->seq_hits[e] += right[w];
    }
}

static void run_member(const Args *a, enum lc_mode mode, int64_t e, Work *k) {
    Net n;
    switch (mode) {
    case LC_TRAIN:
        train_member(a, e, k);
        break;
    case LC_GRAD:
        member_net(&n, a, e);
        a->loss[e] = member_grad(k, a, &n, a->batches + e * a->n_batches * a->batch_size,
                                 a->grad + e * P);
        break;
    case LC_EVAL:
        eval_member(a, e, k);
        break;
    default:
        break;
    }
}

/* Denormals are flushed to zero (FTZ) and read as zero (DAZ) while the kernel runs, and the
   caller's setting is restored after. A converged model is full of them (softmax tails, their
   gradients, AdamW's second moments); on Intel cores each one costs a microcode assist of about a
   hundred cycles, which made a step up to 2.3x slower, and they are far below anything float32
   training can resolve next to the values they are added to. */
static unsigned flush_denormals(void) {
#if defined(__SSE__)
    const unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u);  /* FTZ (bit 15) | DAZ (bit 6) */
    return saved;
#elif defined(__aarch64__)
    const unsigned saved = (unsigned)__builtin_aarch64_get_fpcr();
    __builtin_aarch64_set_fpcr(saved | (1u << 24));  /* FZ */
    return saved;
#else
    return 0;
#endif
}

static void restore_denormals(unsigned saved) {
#if defined(__SSE__)
    _mm_setcsr(saved);
#elif defined(__aarch64__)
    __builtin_aarch64_set_fpcr(saved);
#else
    (void)saved;
#endif
}

static void *worker(void *arg) {
    Job *job = (Job *)arg;
    const Args *a = job->a;
    Work *k = (Work *)aligned_alloc(64, (sizeof(Work) + 63) / 64 * 64);
    if (!k) return (void *)1;
    const unsigned fp_mode = flush_denormals();
    for (;;) {
        const int64_t e = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (e >= a->n_members) break;
        if (a->active && !a->active[e]) continue;
        run_member(a, job->mode, e, k);
    }
    restore_denormals(fp_mode);
    free(k);
    return NULL;
}

#define MAX_THREADS 256

/* 0: done; 1: out of memory; 2: an unknown mode. Never more threads than members or MAX_THREADS
   (the caller also caps them at the CPUs it may use). */
int lc_run(const Args *a, int mode) {
    if (mode < 0 || mode >= LC_N_MODES) return 2;
    Job job = {a, (enum lc_mode)mode, 0};
    int64_t n = a->n_threads < 1 ? 1 : a->n_threads;
    if (n > a->n_members) n = a->n_members;
    if (n > MAX_THREADS) n = MAX_THREADS;
    pthread_t threads[MAX_THREADS];
    int started = 0;
    for (int64_t i = 1; i < n; ++i)
        if (pthread_create(&threads[started], NULL, worker, &job) == 0) ++started;
    int failed = worker(&job) != NULL;
    for (int i = 0; i < started; ++i) {
        void *ret;
        pthread_join(threads[i], &ret);
        failed |= ret != NULL;
    }
    return failed;
}

int lc_work_bytes(void) { return (int)sizeof(Work); }
