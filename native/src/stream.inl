// Counter-based random streams shared by every rank: SplitMix64's finalizer applied to
// key + (counter + 1) * golden. No state, so any coordinate of any stream is computed directly.
// Included inside an instruction-set namespace (and by the CUDA sources with FOBSGD_HD set);
// fobsgd_mpi/rng.py is the numpy twin and the tests hold the two equal.
#ifndef FOBSGD_HD
#define FOBSGD_HD inline
#endif

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kSharedRank = 0xFFFFFFFFull;  // "rank" of streams every rank shares
constexpr uint64_t kPurposeSign = 1, kPurposeDither = 2, kPurposeQSGD = 3;
constexpr uint64_t kPurposeZeroSign = 4, kPurposeVoteTie = 5;  // the sign of an exact zero, a tied vote

FOBSGD_HD uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

FOBSGD_HD uint64_t stream_key(uint64_t seed, uint64_t step, uint64_t block, uint64_t rank,
                              uint64_t purpose) {
    uint64_t k = mix64(seed);
    k = mix64((k ^ step) + kGolden);
    k = mix64((k ^ block) + kGolden);
    k = mix64((k ^ rank) + kGolden);
    return mix64((k ^ purpose) + kGolden);
}

FOBSGD_HD uint64_t stream_word(uint64_t key, uint64_t counter) {
    return mix64(key + (counter + 1) * kGolden);
}

// A 32-bit draw -> an odd multiple of 2^-24 in (-1, 1), exact in float32.
FOBSGD_HD float centred_uniform(uint32_t r) {
    return (float)((int32_t)((r >> 8) * 2u + 1u) - (1 << 24)) * (1.0f / 16777216.0f);
}
