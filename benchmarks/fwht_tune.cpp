// Times the FWHT schedules of native/src/fwht.inl for one instruction set and prints the fastest
// plan per log2 n; benchmarks/fwht.py --tune compiles it once per instruction set this CPU has
// (with that set's flags from setup.py) and writes native/src/fwht_plan.h from its output.
//
//   fwht_tune check MAX_LOG           every candidate plan, log_n 0..MAX_LOG, float and double,
//                                     bit-identical to the plain stage loop (exit 1 if not)
//   fwht_tune tune MIN MAX REPEATS    float32, in place, orthonormal, one thread: for each log_n a
//                                     coordinate search over the plan fields, candidates timed
//                                     interleaved, best of REPEATS; prints
//                                     "plan <log_n> r0 radix c1 tile strip <best ns> <default ns>"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "isa_prelude.h"
namespace fobsgd {
namespace tune {
#include "kernels.inl"
}
}  // namespace fobsgd
using namespace fobsgd::tune;

static double now() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);  // CPU time: a loaded machine preempts us
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

template <class T> static T *alloc(int64_t n) { return (T *)aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64); }

template <class T> static void fill(T *x, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; ++i) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (T)((double)(int64_t)(seed >> 11) / (double)(1ll << 52) - 1.0);
    }
}

static const int kLw = ilog2(WF);

static int candidates(int L, int lw, FwhtPlan *out) {
    int n = 0;
    for (int r0 = 1; r0 <= 4; ++r0)
        for (int radix = 2; radix <= 4; ++radix)
            for (int c1 = 10; c1 <= 14; ++c1)
                for (int tile = c1; tile <= 18; ++tile)
                    for (int strip = lw; strip <= 10; ++strip) {
                        if (L <= lw + 4 && (r0 != 1 || radix != 2 || c1 != 10 || tile != 10 || strip != lw)) continue;
                        if (c1 > L && c1 != 10) continue;  // clamped to L: one stands for all
                        if (tile > L && tile != c1) continue;
                        if (tile >= L && strip != lw) continue;
                        out[n++] = FwhtPlan{(int8_t)r0, (int8_t)radix, (int8_t)c1, (int8_t)tile, (int8_t)strip};
                    }
    return n;
}

template <class T> static int check(int max_log) {
    static FwhtPlan plans[20000];
    const int lw = ilog2(Lanes<T>::W);
    int bad = 0;
    for (int L = 0; L <= max_log; ++L) {
        const int64_t n = (int64_t)1 << L;
        T *x = alloc<T>(n), *ref = alloc<T>(n), *y = alloc<T>(n);
        fill(x, n, L + 1);
        memcpy(ref, x, n * sizeof(T));
        const T scale = (T)(1.0 / __builtin_sqrt((double)n));
        fwht_scalar(ref, n, scale);
        const int np = candidates(L, lw, plans);
        // every plan at small sizes; a spread of them (every 7th, and the table's) at big ones
        for (int i = -1; i < np; i += (L > 18 ? 7 : 1)) {
            memcpy(y, x, n * sizeof(T));
            if (i < 0) fwht_row(y, L, scale);
            else fwht_row_plan(y, L, scale, plans[i]);
            if (memcmp(y, ref, n * sizeof(T))) {
                if (bad++ < 10)
                    printf("MISMATCH %s 2^%d plan %d\n", sizeof(T) == 4 ? "f32" : "f64", L, i);
            }
        }
        free(x), free(ref), free(y);
    }
    return bad;
}

static double time_plan(float *x, int L, const FwhtPlan &p) {
    const float scale = (float)(1.0 / __builtin_sqrt((double)((int64_t)1 << L)));
    fwht_row_plan(x, L, scale, p);  // warm
    const int inner = L < 12 ? (1 << (12 - L)) * 8 : 1;
    const double t0 = now();
    for (int k = 0; k < inner; ++k) fwht_row_plan(x, L, scale, p);
    return (now() - t0) / inner;
}

static void tune(int lo, int hi, int repeats) {
    for (int L = lo; L <= hi; ++L) {
        const int64_t n = (int64_t)1 << L;
        float *x = alloc<float>(n);
        fill(x, n, 7);
        const FwhtPlan def = cpu_plans().plan[0][L];
        FwhtPlan best = def;
        double best_t = 1e9, def_t = 1e9;
        // Coordinate search: vary one field at a time around the best so far, two rounds.
        const int lo_f[5] = {1, 2, 10, 10, kLw}, hi_f[5] = {4, 4, 14, 18, 10};
        for (int round = 0; round < 2; ++round)
            for (int f = 0; f < 5; ++f) {
                FwhtPlan cand[16];
                int nc = 0;
                for (int v = lo_f[f]; v <= hi_f[f]; ++v) {
                    FwhtPlan p = best;
                    int8_t *fld = f == 0 ? &p.r0 : f == 1 ? &p.radix : f == 2 ? &p.c1 : f == 3 ? &p.tile : &p.strip;
                    *fld = (int8_t)v;
                    if (p.tile < p.c1) continue;
                    if (L <= kLw + 4 && f > 0) continue;
                    if (f == 0 && L <= kLw + 4 && v > 1) continue;
                    cand[nc++] = p;
                }
                double t[16];
                for (int i = 0; i < nc; ++i) t[i] = 1e9;
                double td = 1e9;
                for (int r = 0; r < repeats; ++r) {
                    for (int i = 0; i < nc; ++i) {
                        const double ti = time_plan(x, L, cand[i]);
                        t[i] = ti < t[i] ? ti : t[i];
                    }
                    const double ti = time_plan(x, L, def);
                    td = ti < td ? ti : td;
                }
                def_t = td < def_t ? td : def_t;
                // keep the incumbent unless a candidate beats it by more than 2 % (noise)
                int bi = -1;
                double bt = 1e9;
                for (int i = 0; i < nc; ++i)
                    if (!memcmp(&cand[i], &best, sizeof best)) bt = t[i] < bt ? t[i] : bt;
                if (bt > 1e8) bt = best_t;
                for (int i = 0; i < nc; ++i)
                    if (t[i] < 0.98 * bt) bt = t[i], bi = i;
                if (bi >= 0) best = cand[bi];
                best_t = bt;
                if (L <= kLw + 4) break;
            }
        // final say: the winner against the previous table's plan, head to head, twice the repeats
        if (memcmp(&best, &def, sizeof def)) {
            double tb = 1e9, td = 1e9;
            for (int r = 0; r < 2 * repeats; ++r) {
                const double t1 = time_plan(x, L, best), t2 = time_plan(x, L, def);
                tb = t1 < tb ? t1 : tb;
                td = t2 < td ? t2 : td;
            }
            best_t = tb, def_t = td;
            if (tb > 0.97 * td) best = def, best_t = td;  // not clearly better: keep the table's
        }
        printf("plan %d %d %d %d %d %d %.1f %.1f\n", L, best.r0, best.radix, best.c1, best.tile, best.strip,
               best_t * 1e9, def_t * 1e9);
        fflush(stdout);
        free(x);
    }
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "check")) {
        const int m = atoi(argv[2]);
        const int bad = check<float>(m) + check<double>(m > 2 ? m - 2 : m);
        printf("%s: %d mismatches\n", FOBSGD_ISA_NAME, bad);
        return bad != 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "tune")) {
        tune(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
        return 0;
    }
    if (argc >= 9 && !strcmp(argv[1], "time") && (argc - 4) % 5 == 0) {  // time L REPEATS plan...
        const int L = atoi(argv[2]), reps = atoi(argv[3]), np = (argc - 4) / 5;
        float *x = alloc<float>((int64_t)1 << L);
        fill(x, (int64_t)1 << L, 7);
        double best[64];
        for (int i = 0; i < np; ++i) best[i] = 1e9;
        for (int r = 0; r < reps; ++r)
            for (int i = 0; i < np; ++i) {
                const char *const *a = argv + 4 + 5 * i;
                const FwhtPlan p = {(int8_t)atoi(a[0]), (int8_t)atoi(a[1]), (int8_t)atoi(a[2]), (int8_t)atoi(a[3]),
                                    (int8_t)atoi(a[4])};
                const double t = time_plan(x, L, p);
                best[i] = t < best[i] ? t : best[i];
            }
        for (int i = 0; i < np; ++i) printf("%.1f ", best[i] * 1e9);
        printf("\n");
        return 0;
    }
    fprintf(stderr, "usage: %s check MAX_LOG | tune MIN MAX REPEATS\n", argv[0]);
    return 2;
}
