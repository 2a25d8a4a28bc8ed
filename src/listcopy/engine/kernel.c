/* listcopy's CPU kernel: forward, backward and AdamW of E attention-only models, many steps per call.

   The shape is compile-time: Python (listcopy/engine/kernel.py) writes a short header of #defines
   (sizes, parameter offsets, the per-layer attention masks and which rows each layer needs) and
   passes it with -include, so every loop bound below is a constant. Entry points: lc_run (one of
   the modes of enum lc_mode, mirrored by listcopy.engine.kernel.Mode) and lc_work_bytes.

   Shapes: T positions, L list_len, D d_model, H heads, DH d_head, V vocab, NL layers,
   W lanes (sequences per SIMD group), P trainable parameters per member.
   Per-layer tables: ALLOW[l][i][j] query i may attend to key j in layer l; NEED[l][t] position t of
   layer l's input reaches an output (NEED[NL]: the outputs); KEYS[l][t] its key and value do. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef LC_SHAPE
#error "compile with -include <generated shape header> (see listcopy/engine/kernel.py)"
#endif

static const int OFF_WQ[NL] = OFF_WQ_INIT;
static const int OFF_WK[NL] = OFF_WK_INIT;
static const unsigned char ALLOW[NL][T][T] = ALLOW_INIT;
static const unsigned char NEED[NL + 1][T] = NEED_INIT;
static const unsigned char KEYS[NL][T] = KEYS_INIT;

enum lc_mode { LC_TRAIN = 0, LC_GRAD = 1, LC_EVAL = 2, LC_N_MODES = 3 };

/* W lanes: one SIMD vector (GCC / Clang vector extensions) holds one scalar of W sequences */
typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));
#define SPLAT(c) ((vf){0} + (float)(c))

static inline vf vsel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }

/* exp: Cephes' expf polynomial on W lanes; NaN stays NaN, below -87 gives 0 */
static inline vf vexp(vf x) {
    const vi low = x < SPLAT(-87.0f);
    vf xc = vsel(low, SPLAT(-87.0f), x);
    xc = vsel(xc > SPLAT(88.0f), SPLAT(88.0f), xc);
    vf fx = xc * 1.44269504088896341f;
    fx = fx + vsel(fx < SPLAT(0.0f), SPLAT(-0.5f), SPLAT(0.5f));
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

static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }

/* One call's arguments; mirrored field by field by listcopy.engine.kernel._Args. */
typedef struct {
    int64_t n_members;
    float *theta, *exp_avg, *exp_avg_sq;  /* (E, P) */
    const double *lr, *wd;                /* (E) */
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

typedef struct {
    vf R[NL + 1][T][D];            /* residual stream entering layer l (R[NL]: final) */
    vf Q[NL][T][D];
    vf K[NL][T][D];
    vf A[NL][T][T][H];             /* attention pattern, allowed (query, key) entries only */
    vf logit[L][V];
    vf inv_sum[L];
    vf GR[T][D], GN[T][D], GQ[T][D], GK[T][D];
    vf gWU[D][V];                  /* lane-expanded weight gradients, summed over lanes per step */
    vf gWQ[NL][D][D], gWK[NL][D][D];
    vf gWpos[T][D];
    vf valid;
    vi tgt[L];
    int64_t tok[T][W];
    float grad[P];
} Work;

static void load_group(Work *k, const Args *a, const int64_t *rows, int64_t first, int n) {
    /* rows: the batch's row indices, or NULL for rows first, first + 1, ... */
    for (int w = 0; w < W; ++w) {
        const int64_t r = rows ? rows[w < n ? w : 0] : first + (w < n ? w : 0);
        k->valid[w] = w < n ? 1.0f : 0.0f;
        for (int t = 0; t < T; ++t) k->tok[t][w] = a->tokens[r * T + t];
        for (int o = 0; o < L; ++o) k->tgt[o][w] = (int32_t)a->targets[r * L + o];
    }
}

static void forward(Work *k, const float *th) {
    for (int t = 0; t < T; ++t) {
        if (!NEED[0][t]) continue;
        for (int m = 0; m < D; ++m) {
            vf e;
            for (int w = 0; w < W; ++w) e[w] = th[OFF_WE + k->tok[t][w] * D + m];
            k->R[0][t][m] = e + th[OFF_WPOS + t * D + m];
        }
    }
    for (int l = 0; l < NL; ++l) {
        const float *Wq = th + OFF_WQ[l], *Wk = th + OFF_WK[l];
        for (int t = 0; t < T; ++t) {
            for (int pass = 0; pass < 2; ++pass) {
                if (!(pass == 0 ? NEED[l + 1][t] : KEYS[l][t])) continue;
                const float *Wm = pass == 0 ? Wq : Wk;
                vf *out = pass == 0 ? k->Q[l][t] : k->K[l][t];
                for (int h = 0; h < H; ++h)
                    for (int c = 0; c < DH; ++c) {
                        vf acc = SPLAT(0.0f);
                        for (int m = 0; m < D; ++m) acc += k->R[l][t][m] * Wm[(h * D + m) * DH + c];
                        out[h * DH + c] = acc;
                    }
            }
        }
        for (int i = 0; i < T; ++i) {
            if (!NEED[l + 1][i]) continue;
            vf z[DH];
            for (int c = 0; c < DH; ++c) z[c] = SPLAT(0.0f);
            for (int h = 0; h < H; ++h) {
                vf s[T], mx = SPLAT(-INFINITY), sum = SPLAT(0.0f);
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
                vf zh[DH];
                for (int c = 0; c < DH; ++c) zh[c] = SPLAT(0.0f);
                for (int j = 0; j < T; ++j) {
                    if (!ALLOW[l][i][j]) continue;
                    const vf p = s[j] / sum;
                    k->A[l][i][j][h] = p;
                    for (int c = 0; c < DH; ++c) zh[c] += p * k->R[l][j][c];
                }
                for (int c = 0; c < DH; ++c) z[c] += zh[c];
            }
            for (int m = 0; m < D; ++m)
                k->R[l + 1][i][m] = m < DH ? z[m] + k->R[l][i][m] : k->R[l][i][m];
        }
    }
}

/* logits of output position o into k->logit[o] (V) */
static void unembed(Work *k, const float *th, int o) {
    const float *WU = th + OFF_WU;
    const vf *x = k->R[NL][L + 1 + o];
    for (int v = 0; v < V; ++v) {
        vf acc = SPLAT(0.0f);
        for (int m = 0; m < D; ++m) acc += x[m] * WU[m * V + v];
        k->logit[o][v] = acc;
    }
}

/* cross-entropy of output position o, summed over valid lanes; leaves exp(logit - max) in
   k->logit[o] and 1 / sum in k->inv_sum[o] for ce_backward; counts hits when asked */
static double softmax_ce(Work *k, int o, int64_t *hits, uint8_t *right) {
    const vi tgt = k->tgt[o];
    vf *logit = k->logit[o];
    vf mx = SPLAT(-INFINITY), tl = SPLAT(0.0f), sum = SPLAT(0.0f);
    for (int v = 0; v < V; ++v) {
        mx = vmax(logit[v], mx);
        tl = vsel(tgt == v, logit[v], tl);
    }
    if (hits) {
        vi arg = tgt - tgt;
        vf best = SPLAT(-INFINITY);
        for (int v = 0; v < V; ++v) {
            const vi better = logit[v] > best;
            arg = (better & v) | (~better & arg);
            best = vsel(better, logit[v], best);
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

/* gradient of the mean cross-entropy (g_scale = 1 / (B L)) into k->GR at the outputs and k->gWU;
   all output positions in one pass over W_U */
static void ce_backward(Work *k, const float *th, float g_scale) {
    const float *WU = th + OFF_WU;
    vf gx[L][D], scale[L], hit = g_scale * k->valid;
    for (int o = 0; o < L; ++o) {
        scale[o] = hit * k->inv_sum[o];
        for (int m = 0; m < D; ++m) gx[o][m] = SPLAT(0.0f);
    }
    for (int v = 0; v < V; ++v) {
        vf g[L];
        for (int o = 0; o < L; ++o)
            g[o] = k->logit[o][v] * scale[o] - vsel(k->tgt[o] == v, hit, SPLAT(0.0f));
        for (int m = 0; m < D; ++m) {
            const float wt = WU[m * V + v];
            vf acc = k->gWU[m][v];
            for (int o = 0; o < L; ++o) {
                gx[o][m] += g[o] * wt;
                acc += k->R[NL][L + 1 + o][m] * g[o];
            }
            k->gWU[m][v] = acc;
        }
    }
    for (int o = 0; o < L; ++o)
        for (int m = 0; m < D; ++m) k->GR[L + 1 + o][m] = gx[o][m];
}

static void backward(Work *k, const float *th, float *grad) {
    /* k->GR holds the gradient w.r.t. R[NL] at the output positions */
    for (int l = NL - 1; l >= 0; --l) {
        const float *Wq = th + OFF_WQ[l], *Wk = th + OFF_WK[l];
        for (int t = 0; t < T; ++t) {
            if (!NEED[l][t]) continue;
            for (int m = 0; m < D; ++m) {
                k->GN[t][m] = NEED[l + 1][t] ? k->GR[t][m] : SPLAT(0.0f);
                k->GQ[t][m] = k->GK[t][m] = SPLAT(0.0f);
            }
        }
        for (int i = 0; i < T; ++i) {
            if (!NEED[l + 1][i]) continue;
            const vf *gz = k->GR[i];  /* d out[c] / d z_h[c] = 1 for c < DH, every head */
            for (int h = 0; h < H; ++h) {
                vf gp[T], dot = SPLAT(0.0f);
                for (int j = 0; j < T; ++j) {
                    if (!ALLOW[l][i][j]) continue;
                    const vf p = k->A[l][i][j][h];
                    vf acc = SPLAT(0.0f);
                    for (int c = 0; c < DH; ++c) {
                        acc += gz[c] * k->R[l][j][c];
                        k->GN[j][c] += p * gz[c];
                    }
                    gp[j] = acc;
                    dot += p * acc;
                }
                for (int j = 0; j < T; ++j) {
                    if (!ALLOW[l][i][j]) continue;
                    const vf gs = k->A[l][i][j][h] * (gp[j] - dot) / SQRT_DH;
                    for (int c = 0; c < DH; ++c) {
                        k->GQ[i][h * DH + c] += gs * k->K[l][j][h * DH + c];
                        k->GK[j][h * DH + c] += gs * k->Q[l][i][h * DH + c];
                    }
                }
            }
        }
        for (int t = 0; t < T; ++t) {
            for (int pass = 0; pass < 2; ++pass) {
                if (!(pass == 0 ? NEED[l + 1][t] : KEYS[l][t])) continue;
                const float *Wm = pass == 0 ? Wq : Wk;
                const vf *gin = pass == 0 ? k->GQ[t] : k->GK[t];
                vf (*gW)[D] = pass == 0 ? k->gWQ[l] : k->gWK[l];
                for (int m = 0; m < D; ++m) {
                    vf acc = SPLAT(0.0f);
                    const vf r = k->R[l][t][m];
                    for (int h = 0; h < H; ++h)
                        for (int c = 0; c < DH; ++c) {
                            const int j = h * DH + c;
                            acc += gin[j] * Wm[(h * D + m) * DH + c];
                            gW[m][j] += r * gin[j];
                        }
                    k->GN[t][m] += acc;
                }
            }
        }
        memcpy(k->GR, k->GN, sizeof k->GR);
    }
    for (int t = 0; t < T; ++t) {
        if (!NEED[0][t]) continue;
        for (int m = 0; m < D; ++m) k->gWpos[t][m] += k->GR[t][m];
        for (int w = 0; w < W; ++w) {
            if (k->valid[w] == 0.0f) continue;
            float *g = grad + OFF_WE + k->tok[t][w] * D;
            for (int m = 0; m < D; ++m) g[m] += k->GR[t][m][w];
        }
    }
}

static float lane_sum(vf x) {
    float t[W];  /* pairwise: log2(W) dependent adds instead of W */
    memcpy(t, &x, sizeof t);
    for (int n = W / 2; n > 0; n /= 2)
        for (int w = 0; w < n; ++w) t[w] += t[w + n];
    return t[0];
}

/* loss (mean over the batch's output tokens) and gradient of one member on one batch */
static double member_grad(Work *k, const Args *a, const float *th, const int64_t *rows, float *grad) {
    const int64_t B = a->batch_size;
    const float g_scale = 1.0f / (float)(B * L);
    memset(k->gWU, 0, sizeof k->gWU);
    memset(k->gWQ, 0, sizeof k->gWQ);
    memset(k->gWK, 0, sizeof k->gWK);
    memset(k->gWpos, 0, sizeof k->gWpos);
    memset(grad, 0, sizeof(float) * P);
    double loss = 0.0;
    for (int64_t b = 0; b < B; b += W) {
        const int n = B - b < W ? (int)(B - b) : W;
        load_group(k, a, rows + b, 0, n);
        forward(k, th);
        for (int o = 0; o < L; ++o) {
            unembed(k, th, o);
            loss += softmax_ce(k, o, NULL, NULL);
        }
        ce_backward(k, th, g_scale);
        backward(k, th, grad);
    }
    for (int m = 0; m < D; ++m)
        for (int v = 0; v < V; ++v) grad[OFF_WU + m * V + v] = lane_sum(k->gWU[m][v]);
    for (int l = 0; l < NL; ++l)
        for (int m = 0; m < D; ++m)
            for (int h = 0; h < H; ++h)
                for (int c = 0; c < DH; ++c) {
                    grad[OFF_WQ[l] + (h * D + m) * DH + c] = lane_sum(k->gWQ[l][m][h * DH + c]);
                    grad[OFF_WK[l] + (h * D + m) * DH + c] = lane_sum(k->gWK[l][m][h * DH + c]);
                }
    for (int t = 0; t < T; ++t)
        for (int m = 0; m < D; ++m) grad[OFF_WPOS + t * D + m] = lane_sum(k->gWpos[t][m]);
    return loss / (double)(B * L);
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

/* n_steps AdamW steps of member e; each step's mean loss is added to a->loss[e] */
static void train_member(const Args *a, int64_t e, Work *k) {
    float *th = a->theta + e * P;
    for (int64_t s = 0; s < a->n_steps; ++s) {
        const int64_t bi = (a->batch0 + s) % a->n_batches;
        const int64_t *rows = a->batches + (e * a->n_batches + bi) * a->batch_size;
        a->loss[e] += member_grad(k, a, th, rows, k->grad);
        adamw(th, k->grad, a->exp_avg + e * P, a->exp_avg_sq + e * P, a->step0 + s + 1,
              a->lr[e], a->wd[e]);
    }
}

/* summed cross-entropy, token hits and sequence hits of member e on its rows, added to a->loss,
   a->hits, a->seq_hits (group by group: any split of the rows into W-aligned calls sums alike) */
static void eval_member(const Args *a, int64_t e, Work *k) {
    const float *th = a->theta + e * P;
    const int64_t end = a->row0 + a->row_count;
    for (int64_t b = a->row0; b < end; b += W) {
        const int n = end - b < W ? (int)(end - b) : W;
        int64_t hits = 0;
        uint8_t right[W];
        memset(right, 1, sizeof right);
        load_group(k, a, NULL, b, n);
        forward(k, th);
        for (int o = 0; o < L; ++o) {
            unembed(k, th, o);
            if (a->logits) {
                float *dst = a->logits + ((e * a->n_rows + b) * L + o) * V;
                for (int w = 0; w < n; ++w)
                    for (int v = 0; v < V; ++v) dst[(int64_t)w * L * V + v] = k->logit[o][v][w];
            }
            a->loss[e] += softmax_ce(k, o, &hits, right);
        }
        a->hits[e] += hits;
        for (int w = 0; w < n; ++w) a->seq_hits[e] += right[w];
    }
}

static void run_member(const Args *a, enum lc_mode mode, int64_t e, Work *k) {
    switch (mode) {
    case LC_TRAIN:
        train_member(a, e, k);
        break;
    case LC_GRAD:
        a->loss[e] = member_grad(k, a, a->theta + e * P, a->batches + e * a->n_batches * a->batch_size,
                                 a->grad + e * P);
        break;
    case LC_EVAL:
        eval_member(a, e, k);
        break;
    default:
        break;
    }
}

static void *worker(void *arg) {
    Job *job = (Job *)arg;
    const Args *a = job->a;
    Work *k = (Work *)aligned_alloc(64, (sizeof(Work) + 63) / 64 * 64);
    if (!k) return (void *)1;
    for (;;) {
        const int64_t e = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (e >= a->n_members) break;
        if (a->active && !a->active[e]) continue;
        run_member(a, job->mode, e, k);
    }
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
