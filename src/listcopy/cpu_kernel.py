"""A compiled CPU kernel for the default model: forward, backward and AdamW, many steps per call.

The engine's torch path runs any configuration on any device; on the CPU, for the seed's default
constraints (frozen identity W_V / W_O, no biases, no LayerNorm, d_model <= 64), this kernel does
the same math in one C function per call, generated for the exact shape (all sizes are constants)
and compiled once with the system's C compiler into a cache directory (``~/.cache/listcopy``, or
``$XDG_CACHE_HOME/listcopy``). Loaded with ctypes; no torch headers, so a build takes about a second.

Why it is fast: a training step of the default model is ~3.6 MFLOP spread over thousands of tiny
ops (5x5 attention, 8-wide projections), which PyTorch pays for in dispatch and memory passes. Here
a group of ``W`` sequences is processed at once with the batch in the innermost ("lane") axis, so
every scalar of the per-sequence math is one SIMD vector (GCC / Clang vector extensions), the
activations stay in L1, the unembedding, softmax, cross-entropy and their backward are fused, and
only the query/key positions that can reach an output are computed (the attention mask prunes the
last layers). Members are independent: each call runs ``n_steps`` steps of every active member,
members spread over threads; a stopped member costs nothing.

Numerics: float32 as torch, exp by Cephes' polynomial (about 1 ulp), sums in another order than
torch's kernels: results equal the torch backend's up to float rounding (tests/test_engine.py), and
a float64 reference is as close to the one as to the other. Where no C compiler works, ``load``
returns None with a one-line notice and the engine trains with torch.

Shapes (all C constants): T positions, L list_len, D d_model, H heads, DH d_head, V vocab,
NL layers, W lanes (sequences per SIMD group), P trainable parameters per member.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger("listcopy")

# Widest model the kernel takes. Its weight-gradient buffers are lane-expanded (D x D x W floats per
# matrix): one model's loss and gradient on one thread, kernel vs torch: d_model 32 0.6 vs 2.4 ms,
# 64 1.9 vs 4.2 ms, 128 7.6 vs 9.2 ms (buffers of 6 MB a thread, and torch's matmuls use threads).
MAX_D_MODEL = 64

# ---- the C source -----------------------------------------------------------------------------

_SOURCE = r"""
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- generated: the shape ---- */
@CONSTANTS@

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

typedef struct {
    int64_t n_members;
    float *theta, *exp_avg, *exp_avg_sq;  /* (E, P) */
    const double *lr, *wd;                /* (E) */
    const uint8_t *active;                /* (E); NULL: every member */
    const int64_t *tokens;                /* (N, T) */
    const int64_t *targets;               /* (N, L): targets at the output positions */
    int64_t n_rows;                       /* N */
    const int64_t *batches;               /* (E, n_batches, batch_size) rows; NULL: rows 0..N-1 */
    int64_t n_batches, batch_size, batch0, n_steps, step0;
    double *loss;                         /* (E): summed per-step mean losses (train), summed CE (eval) */
    int64_t *hits, *seq_hits;             /* (E) eval */
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
                    if (!ALLOW[i][j]) continue;
                    vf acc = SPLAT(0.0f);
                    for (int c = 0; c < DH; ++c) acc += k->Q[l][i][h * DH + c] * k->K[l][j][h * DH + c];
                    s[j] = acc / SQRT_DH;
                    mx = vmax(s[j], mx);
                }
                for (int j = 0; j < T; ++j) {
                    if (!ALLOW[i][j]) continue;
                    s[j] = vexp(s[j] - mx);
                    sum += s[j];
                }
                vf zh[DH];
                for (int c = 0; c < DH; ++c) zh[c] = SPLAT(0.0f);
                for (int j = 0; j < T; ++j) {
                    if (!ALLOW[i][j]) continue;
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
                    if (!ALLOW[i][j]) continue;
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
                    if (!ALLOW[i][j]) continue;
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
    int mode;  /* 0 train, 1 grad, 2 eval */
    int64_t next;
} Job;

static void run_member(const Args *a, int mode, int64_t e, Work *k) {
    float *th = a->theta + e * P;
    const int64_t B = a->batch_size;
    if (mode == 0) {
        double loss = 0.0;
        for (int64_t s = 0; s < a->n_steps; ++s) {
            const int64_t bi = (a->batch0 + s) % a->n_batches;
            const int64_t *rows = a->batches + (e * a->n_batches + bi) * B;
            loss += member_grad(k, a, th, rows, k->grad);
            adamw(th, k->grad, a->exp_avg + e * P, a->exp_avg_sq + e * P, a->step0 + s + 1,
                  a->lr[e], a->wd[e]);
        }
        a->loss[e] += loss;
    } else if (mode == 1) {
        a->loss[e] = member_grad(k, a, th, a->batches + e * a->n_batches * B, a->grad + e * P);
    } else {
        double loss = 0.0;
        int64_t hits = 0, seq_hits = 0;
        for (int64_t b = 0; b < a->n_rows; b += W) {
            const int n = a->n_rows - b < W ? (int)(a->n_rows - b) : W;
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
                loss += softmax_ce(k, o, &hits, right);
            }
            for (int w = 0; w < n; ++w) seq_hits += right[w];
        }
        a->loss[e] = loss;
        a->hits[e] = hits;
        a->seq_hits[e] = seq_hits;
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

static int run(const Args *a, int mode) {
    Job job = {a, mode, 0};
    int64_t n = a->n_threads < 1 ? 1 : a->n_threads;
    if (n > a->n_members) n = a->n_members;
    if (n > 256) n = 256;
    pthread_t threads[256];
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

int lc_train(const Args *a) { return run(a, 0); }
int lc_grad(const Args *a) { return run(a, 1); }
int lc_eval(const Args *a) { return run(a, 2); }
int lc_work_bytes(void) { return (int)sizeof(Work); }
"""


class _Args(ctypes.Structure):
    _fields_ = [
        ("n_members", ctypes.c_int64),
        ("theta", ctypes.c_void_p), ("exp_avg", ctypes.c_void_p), ("exp_avg_sq", ctypes.c_void_p),
        ("lr", ctypes.c_void_p), ("wd", ctypes.c_void_p),
        ("active", ctypes.c_void_p),
        ("tokens", ctypes.c_void_p), ("targets", ctypes.c_void_p),
        ("n_rows", ctypes.c_int64),
        ("batches", ctypes.c_void_p),
        ("n_batches", ctypes.c_int64), ("batch_size", ctypes.c_int64), ("batch0", ctypes.c_int64),
        ("n_steps", ctypes.c_int64), ("step0", ctypes.c_int64),
        ("loss", ctypes.c_void_p),
        ("hits", ctypes.c_void_p), ("seq_hits", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
        ("logits", ctypes.c_void_p),
        ("n_threads", ctypes.c_int64),
    ]


@dataclass(frozen=True)
class KernelShape:
    """Everything the generated source depends on."""

    T: int
    L: int
    D: int
    H: int
    V: int
    NL: int
    offsets: tuple[tuple[str, int], ...]  # trainable parameter name -> offset in a member's row
    P: int
    allow: tuple[tuple[int, ...], ...]  # (T, T) 1 where query i may attend to key j

    @property
    def DH(self) -> int:
        return self.D // self.H

    def needed(self) -> tuple[list[list[int]], list[list[int]]]:
        """Which positions of each layer's input (NEED[l], l = 0..NL) and keys (KEYS[l]) reach
        an output: NEED[NL] is the outputs; a layer needs its queries' positions and their keys."""
        T, L = self.T, self.L
        need = [[0] * T for _ in range(self.NL + 1)]
        keys = [[0] * T for _ in range(self.NL)]
        for t in range(L + 1, T):
            need[self.NL][t] = 1
        for l in range(self.NL - 1, -1, -1):
            for i in range(T):
                if need[l + 1][i]:
                    need[l][i] = 1
                    for j in range(T):
                        if self.allow[i][j]:
                            keys[l][j] = need[l][j] = 1
        return need, keys

    def source(self, lanes: int) -> str:
        off = dict(self.offsets)
        need, keys = self.needed()
        def arr(rows):
            return "{" + ", ".join("{" + ", ".join(map(str, r)) + "}" for r in rows) + "}"

        lines = [
            f"#define T {self.T}", f"#define L {self.L}", f"#define D {self.D}", f"#define H {self.H}",
            f"#define DH {self.DH}", f"#define V {self.V}", f"#define NL {self.NL}",
            f"#define W {lanes}",
            f"#define P {self.P}",
            f"#define OFF_WE {off['embed.W_E']}", f"#define OFF_WPOS {off['pos_embed.W_pos']}",
            f"#define OFF_WU {off['unembed.W_U']}",
            f"#define SQRT_DH {float(torch.tensor(self.DH ** 0.5, dtype=torch.float32))!r}f",
            "static const int OFF_WQ[NL] = {"
            + ", ".join(str(off[f"blocks.{i}.attn.W_Q"]) for i in range(self.NL)) + "};",
            "static const int OFF_WK[NL] = {"
            + ", ".join(str(off[f"blocks.{i}.attn.W_K"]) for i in range(self.NL)) + "};",
            f"static const unsigned char ALLOW[T][T] = {arr(self.allow)};",
            f"static const unsigned char NEED[NL + 1][T] = {arr(need)};",
            f"static const unsigned char KEYS[NL][T] = {arr(keys)};",
        ]
        return _SOURCE.replace("@CONSTANTS@", "\n".join(lines))


# ---- building and loading ---------------------------------------------------------------------

_FLAG_SETS = (
    ["-O3", "-march=native"],
    ["-O3", "-mcpu=native"],
    ["-O3"],
)
_COMMON = ["-std=c11", "-fPIC", "-shared", "-ffp-contract=fast", "-fno-math-errno",
           "-fno-trapping-math", "-D_POSIX_C_SOURCE=200809L", "-D_ISOC11_SOURCE"]
_LIBS = ["-lm", "-lpthread"]
_loaded: dict[str, "Kernel | None"] = {}  # per source and process (ctypes libraries stay loaded)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "listcopy" / "kernels"


def _machine_key() -> str:
    """The CPU (model and feature flags): -march=native code must not run on another machine."""
    info = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            info += "".join(sorted({ln for ln in fh if ln.startswith(("model name", "flags"))}))
    except OSError:
        info += platform.processor()
    return info


def lanes() -> int:
    """Sequences per SIMD group: 16 with AVX-512, else 8."""
    try:
        with open("/proc/cpuinfo") as fh:
            return 16 if " avx512f" in fh.read() else 8
    except OSError:
        return 8


def load(shape: KernelShape, lanes_: int | None = None, *, fresh: bool = False) -> "Kernel | None":
    """The compiled kernel for ``shape``, building it if needed; None (with a one-line notice)
    where no C compiler works. ``fresh``: ignore what this process has loaded already."""
    src = shape.source(lanes_ or lanes())
    compiler = os.environ.get("CC") or "cc"
    key = hashlib.sha256((src + compiler + _machine_key()).encode()).hexdigest()[:24]
    if key in _loaded and not fresh:
        return _loaded[key]
    kernel = None
    try:
        kernel = Kernel(_build(src, key, compiler), shape)
    except (OSError, RuntimeError) as err:
        log.warning("listcopy: no compiled CPU kernel (%s); training with the torch engine", err)
    if not fresh:
        _loaded[key] = kernel
    return kernel


def _build(src: str, key: str, compiler: str) -> Path:
    directory = cache_dir()
    target = directory / f"lc_{key}.so"
    if target.exists():
        return target
    if shutil.which(compiler) is None:
        raise RuntimeError(f"C compiler {compiler!r} not found")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryDirectory(dir=directory)
    except OSError:  # a read-only home: build into the temporary directory instead
        uid = getattr(os, "getuid", lambda: 0)()
        directory = Path(tempfile.gettempdir()) / f"listcopy-kernels-{uid}"
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / target.name
        if target.exists():
            return target
        probe = tempfile.TemporaryDirectory(dir=directory)
    with probe as tmp:
        c_file = Path(tmp) / "kernel.c"
        c_file.write_text(src)
        errors = ""
        for flags in _FLAG_SETS:
            out = Path(tmp) / "kernel.so"
            cmd = [compiler, *flags, *_COMMON, str(c_file), "-o", str(out), *_LIBS]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                os.replace(out, target)
                return target
            errors = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        raise RuntimeError(f"{compiler} failed: {errors}")


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class Kernel:
    """ctypes wrapper: every tensor is a contiguous CPU tensor of the dtype named."""

    def __init__(self, path: Path, shape: KernelShape):
        self.lib = ctypes.CDLL(str(path))
        for name in ("lc_train", "lc_grad", "lc_eval"):
            fn = getattr(self.lib, name)
            fn.argtypes = [ctypes.POINTER(_Args)]
            fn.restype = ctypes.c_int
        self.shape = shape

    def _call(self, name: str, **kw) -> None:
        args = _Args(**{k: _ptr(v) if isinstance(v, Tensor) or v is None else v
                        for k, v in kw.items()})
        if getattr(self.lib, name)(ctypes.byref(args)) != 0:
            raise MemoryError(f"listcopy kernel {name}: out of memory")

    def train(self, theta: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, lr: Tensor, wd: Tensor,
              active: Tensor | None, tokens: Tensor, targets: Tensor, batches: Tensor, batch0: int,
              n_steps: int, step0: int, loss: Tensor, n_threads: int) -> None:
        """``n_steps`` AdamW steps of every active member, in place; member e's step s uses rows
        ``batches[e, (batch0 + s) % n_batches]``; adds each step's mean loss into ``loss`` (float64).
        lr, wd: float64 (E,); active: uint8 (E,) or None."""
        E, n_batches, B = batches.shape
        self._call("lc_train", n_members=E, theta=theta, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                   lr=lr, wd=wd, active=active, tokens=tokens, targets=targets,
                   n_rows=tokens.shape[0], batches=batches, n_batches=n_batches, batch_size=B,
                   batch0=batch0, n_steps=n_steps, step0=step0, loss=loss, n_threads=n_threads)

    def grad(self, theta: Tensor, tokens: Tensor, targets: Tensor, rows: Tensor, loss: Tensor,
             grad: Tensor, n_threads: int = 1) -> None:
        """Mean loss and gradient of member e on rows ``rows[e]`` (E, B)."""
        E, B = rows.shape
        self._call("lc_grad", n_members=E, theta=theta, tokens=tokens, targets=targets,
                   n_rows=tokens.shape[0], batches=rows, n_batches=1, batch_size=B, loss=loss,
                   grad=grad, n_threads=n_threads)

    def evaluate(self, theta: Tensor, active: Tensor | None, tokens: Tensor, targets: Tensor,
                 loss: Tensor, hits: Tensor, seq_hits: Tensor, logits: Tensor | None = None,
                 n_threads: int = 1) -> None:
        """Summed CE, token hits and sequence hits of every active member on all rows."""
        self._call("lc_eval", n_members=theta.shape[0], theta=theta, active=active, tokens=tokens,
                   targets=targets, n_rows=tokens.shape[0], loss=loss, hits=hits, seq_hits=seq_hits,
                   logits=logits, n_threads=n_threads)
