/*
 * Exhaustive meet-in-the-middle search for Williamson matrices of odd order N
 * (default N = 43), i.e. four symmetric circulant +-1 matrices A, B, C, D with
 *
 *     A^2 + B^2 + C^2 + D^2 = 4 N I.
 *
 * Method (the classical one, cf. Holzmann, Kharaghani, Tayfeh-Rezaie,
 * "Williamson matrices up to order 59", Des. Codes Cryptogr. 46 (2008)):
 *
 *  1. A symmetric circulant of odd order N is fixed by its first row
 *     (a_0, a_1, ..., a_H), H = (N-1)/2, a_{N-j} = a_j.  Negating a matrix keeps
 *     its square, so WLOG a_0 = +1.  Then the row sum s = 1 + 2(a_1+...+a_H)
 *     is congruent to N mod 4.
 *  2. Row sums satisfy s_A^2 + s_B^2 + s_C^2 + s_D^2 = 4N; all such signed
 *     decompositions are enumerated.
 *  3. Every candidate row (2^H of them) is filtered by the exact necessary
 *     condition PSD(k) = |DFT(row)(k)|^2 <= 4N for k = 1..H (the PSDs of the
 *     four rows must sum to exactly 4N at every k).
 *  4. For a row-sum decomposition (sA, sB, sC, sD), all pairs (A, B) with
 *     PSD_A + PSD_B <= 4N everywhere are stored in a hash table keyed by the
 *     integer vector PAF_A(j) + PAF_B(j), j = 1..H (periodic autocorrelation).
 *     A is restricted to the lexicographically smallest representative of its
 *     orbit under the multipliers j -> u j (u in Z_N^*), which maps Williamson
 *     quadruples to Williamson quadruples (valid for prime N; for composite N
 *     the -u option is harmless but the orbit reduction is still correct since
 *     multiplication by a unit is a permutation of Z_N).
 *     Then all pairs (C, D) are streamed; each pair passing the PSD filter is
 *     looked up with key -(PAF_C + PAF_D).  A hit is a Williamson quadruple
 *     (sum of PAFs zero at every nonzero shift <=> sum of squares = 4N I); every
 *     hit is re-verified directly before it is printed.
 *
 * Build:  gcc -O3 -march=native -fopenmp -o /tmp/williamson_search williamson_search.c -lm
 * Run:    /tmp/williamson_search [N] [max_solutions_per_decomposition]
 *
 * Output lines "SOLUTION sA sB sC sD | rowA | rowB | rowC | rowD" give the full
 * first rows as strings of '+'/'-' (length N).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXH 32

static int N, H, FOURN;

typedef struct {
    uint32_t mask;       /* bit j-1 set <=> a_j = -1, j = 1..H */
    int s;               /* row sum */
    float psd[MAXH];     /* PSD(k), k = 1..H */
    int8_t paf[MAXH];    /* PAF(j), j = 1..H */
} Cand;

typedef struct {
    Cand *v;
    size_t n, cap;
} CandList;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void full_row(uint32_t mask, int *row) {
    row[0] = 1;
    for (int j = 1; j <= H; j++) {
        int v = (mask >> (j - 1)) & 1 ? -1 : 1;
        row[j] = v;
        row[N - j] = v;
    }
}

static uint32_t row_to_mask(const int *row) {
    uint32_t m = 0;
    for (int j = 1; j <= H; j++)
        if (row[j] < 0) m |= 1u << (j - 1);
    return m;
}

/* smallest mask in the orbit of `mask` under j -> u*j (u a unit mod N) */
static uint32_t canonical(uint32_t mask) {
    int row[256], r2[256];
    full_row(mask, row);
    uint32_t best = mask;
    for (int u = 2; u < N; u++) {
        int a = u, b = N, t;
        while (b) { t = a % b; a = b; b = t; }
        if (a != 1) continue;
        for (int j = 0; j < N; j++) r2[j] = row[(u * j) % N];
        uint32_t m = row_to_mask(r2);
        if (m < best) best = m;
    }
    return best;
}

static CandList cand_by_sum[512];   /* indexed by s + 256 */

static void gen_candidates(void) {
    double cosv[MAXH + 1][MAXH + 1];
    for (int j = 1; j <= H; j++)
        for (int k = 1; k <= H; k++)
            cosv[j][k] = 2.0 * cos(2.0 * M_PI * j * k / N);
    double bound = sqrt((double)FOURN) + 1e-9;
    uint32_t total = 1u << H;
    for (uint32_t m = 0; m < total; m++) {
        double f[MAXH + 1];
        int ok = 1;
        for (int k = 1; k <= H; k++) f[k] = 1.0;
        for (int j = 1; j <= H; j++) {
            double sg = (m >> (j - 1)) & 1 ? -1.0 : 1.0;
            for (int k = 1; k <= H; k++) f[k] += sg * cosv[j][k];
        }
        for (int k = 1; k <= H; k++)
            if (fabs(f[k]) > bound) { ok = 0; break; }
        if (!ok) continue;
        Cand c;
        memset(&c, 0, sizeof c);
        c.mask = m;
        c.s = 1 + 2 * (H - 2 * __builtin_popcount(m));
        for (int k = 1; k <= H; k++) c.psd[k - 1] = (float)(f[k] * f[k]);
        int row[256];
        full_row(m, row);
        for (int j = 1; j <= H; j++) {
            int acc = 0;
            for (int i = 0; i < N; i++) acc += row[i] * row[(i + j) % N];
            c.paf[j - 1] = (int8_t)acc;
        }
        CandList *L = &cand_by_sum[c.s + 256];
        if (L->n == L->cap) {
            L->cap = L->cap ? 2 * L->cap : 1024;
            L->v = realloc(L->v, L->cap * sizeof(Cand));
        }
        L->v[L->n++] = c;
    }
}

static int cmp_psd0(const void *a, const void *b) {
    float x = ((const Cand *)a)->psd[0], y = ((const Cand *)b)->psd[0];
    return (x > y) - (x < y);
}

/* ---- hash table of (A, B) pairs keyed by PAF_A + PAF_B ---- */
typedef struct {
    int8_t key[MAXH];
    uint32_t ia, ib;
} Pair;

static Pair *pairs;
static size_t npairs, cappairs;
static int64_t *table;   /* index into pairs, -1 = empty */
static size_t tmask;

static uint64_t hash_key(const int8_t *k) {
    uint64_t h = 1469598103934665603ull;
    for (int j = 0; j < H; j++) { h ^= (uint8_t)k[j]; h *= 1099511628211ull; }
    h ^= h >> 29; h *= 0xbf58476d1ce4e5b9ull; h ^= h >> 32;
    return h;
}

static int verify(const uint32_t *masks) {
    int rows[4][256];
    for (int q = 0; q < 4; q++) full_row(masks[q], rows[q]);
    for (int j = 1; j < N; j++) {
        int acc = 0;
        for (int q = 0; q < 4; q++)
            for (int i = 0; i < N; i++) acc += rows[q][i] * rows[q][(i + j) % N];
        if (acc != 0) return 0;
    }
    return 1;
}

static void print_row(uint32_t mask) {
    int row[256];
    full_row(mask, row);
    putchar(' ');
    for (int i = 0; i < N; i++) putchar(row[i] > 0 ? '+' : '-');
}

/* search one decomposition; returns number of solutions found */
static long search(int sA, int sB, int sC, int sD, long max_sol) {
    CandList *LA = &cand_by_sum[sA + 256], *LB = &cand_by_sum[sB + 256];
    CandList *LC = &cand_by_sum[sC + 256], *LD = &cand_by_sum[sD + 256];
    double t0 = now();
    const float lim = (float)FOURN + 1e-3f;
    /* canonical A only */
    size_t nAc = 0;
    uint32_t *Aidx = malloc(LA->n * sizeof(uint32_t));
    for (size_t i = 0; i < LA->n; i++)
        if (canonical(LA->v[i].mask) == LA->v[i].mask) Aidx[nAc++] = (uint32_t)i;
    npairs = 0;
    for (size_t ii = 0; ii < nAc; ii++) {
        const Cand *a = &LA->v[Aidx[ii]];
        for (size_t ib = 0; ib < LB->n; ib++) {
            const Cand *b = &LB->v[ib];
            int ok = 1;
            for (int k = 0; k < H; k++)
                if (a->psd[k] + b->psd[k] > lim) { ok = 0; break; }
            if (!ok) continue;
            if (npairs == cappairs) {
                cappairs = cappairs ? 2 * cappairs : (1u << 20);
                pairs = realloc(pairs, cappairs * sizeof(Pair));
            }
            Pair *p = &pairs[npairs++];
            memset(p->key, 0, sizeof p->key);
            for (int k = 0; k < H; k++) p->key[k] = (int8_t)(a->paf[k] + b->paf[k]);
            p->ia = Aidx[ii];
            p->ib = (uint32_t)ib;
        }
    }
    size_t tsize = 1;
    while (tsize < 2 * npairs + 16) tsize <<= 1;
    tmask = tsize - 1;
    table = realloc(table, tsize * sizeof(int64_t));
    memset(table, 0xff, tsize * sizeof(int64_t));
    for (size_t i = 0; i < npairs; i++) {
        size_t h = hash_key(pairs[i].key) & tmask;
        while (table[h] >= 0) h = (h + 1) & tmask;
        table[h] = (int64_t)i;
    }
    double t1 = now();
    fprintf(stderr, "  decomposition (%d,%d,%d,%d): |A|=%zu (canonical %zu) |B|=%zu |C|=%zu |D|=%zu, "
            "left pairs %zu built in %.1fs\n", sA, sB, sC, sD, LA->n, nAc, LB->n, LC->n, LD->n,
            npairs, t1 - t0);
    long nsol = 0;
    long nright = 0;
    int same = (sC == sD);
    volatile int stop = 0;
#pragma omp parallel for schedule(dynamic, 64) reduction(+ : nright)
    for (size_t ic = 0; ic < LC->n; ic++) {
        if (stop) continue;
        const Cand *c = &LC->v[ic];
        float rem0 = lim - c->psd[0];
        /* LD is sorted by psd[0]: only a prefix can fit */
        size_t lo = 0, hi = LD->n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (LD->v[mid].psd[0] <= rem0) lo = mid + 1; else hi = mid;
        }
        for (size_t id = 0; id < lo; id++) {
            if (same && id < ic) continue;
            const Cand *d = &LD->v[id];
            int ok = 1;
            for (int k = 1; k < H; k++)
                if (c->psd[k] + d->psd[k] > lim) { ok = 0; break; }
            if (!ok) continue;
            nright++;
            int8_t key[MAXH];
            memset(key, 0, sizeof key);
            for (int k = 0; k < H; k++) key[k] = (int8_t)(-(c->paf[k] + d->paf[k]));
            size_t h = hash_key(key) & tmask;
            while (table[h] >= 0) {
                const Pair *p = &pairs[table[h]];
                if (memcmp(p->key, key, H) == 0) {
                    uint32_t m[4] = {LA->v[p->ia].mask, LB->v[p->ib].mask, c->mask, d->mask};
                    if (verify(m)) {
#pragma omp critical
                        {
                            if (nsol < max_sol) {
                                printf("SOLUTION %d %d %d %d |", sA, sB, sC, sD);
                                print_row(m[0]); printf(" |"); print_row(m[1]); printf(" |");
                                print_row(m[2]); printf(" |"); print_row(m[3]); printf("\n");
                                fflush(stdout);
                            }
                            nsol++;
                            if (nsol >= max_sol) stop = 1;
                        }
                    }
                }
                h = (h + 1) & tmask;
            }
        }
    }
    fprintf(stderr, "  right pairs passing PSD filter: %ld; solutions (A canonical): %ld%s; %.1fs\n",
            nright, nsol, stop ? " (stopped early)" : "", now() - t1);
    free(Aidx);
    return nsol;
}

int main(int argc, char **argv) {
    N = argc > 1 ? atoi(argv[1]) : 43;
    long max_sol = argc > 2 ? atol(argv[2]) : 1000000;
    if (N < 3 || N % 2 == 0 || (N - 1) / 2 > MAXH - 1 || N > 255) {
        fprintf(stderr, "N must be odd, 3 <= N <= 63\n");
        return 1;
    }
    H = (N - 1) / 2;
    FOURN = 4 * N;
    double t0 = now();
    gen_candidates();
    for (int s = -N; s <= N; s++) {
        CandList *L = &cand_by_sum[s + 256];
        if (L->n) qsort(L->v, L->n, sizeof(Cand), cmp_psd0);
    }
    fprintf(stderr, "N=%d: candidates generated in %.1fs\n", N, now() - t0);
    /* signed row-sum decompositions, s = N (mod 4), sorted |sA|>=|sB|>=..., then
     * split so the two largest candidate lists form the stored (left) side. */
    long total = 0;
    int ms = (int)sqrt((double)FOURN);
    for (int a = -ms; a <= ms; a++)
        for (int b = a; b <= ms; b++)
            for (int c = b; c <= ms; c++)
                for (int d = c; d <= ms; d++) {
                    int v[4] = {a, b, c, d};
                    int good = (a * a + b * b + c * c + d * d == FOURN);
                    for (int q = 0; q < 4 && good; q++)
                        if ((((v[q] - N) % 4) + 4) % 4 != 0) good = 0;
                    if (!good) continue;
                    /* order by candidate count, largest first: left = two largest */
                    for (int x = 0; x < 4; x++)
                        for (int y = x + 1; y < 4; y++)
                            if (cand_by_sum[v[y] + 256].n > cand_by_sum[v[x] + 256].n) {
                                int t = v[x]; v[x] = v[y]; v[y] = t;
                            }
                    total += search(v[0], v[1], v[2], v[3], max_sol);
                }
    fprintf(stderr, "total solutions (A canonical under multipliers): %ld; elapsed %.1fs\n", total,
            now() - t0);
    return 0;
}
