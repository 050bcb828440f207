// layerforge/detail/dropout_hash.h — the counter-based hash behind attention dropout, compiled into both the
// CPU kernels and the CUDA kernels from this one definition, so a seed drops the same attention weights on
// either device (tests compare the two bit for bit).
//
// Element idx = (batch * L + row) * S + column is kept when u >= p, u = bits53(key(seed), idx) * 2^-53 in
// [0, 1). Since u is a 53-bit integer times 2^-53 (exact in double), u >= p  <=>  bits53 >= ceil(p * 2^53),
// which is how the GPU decides without floating point (dropout_threshold).
#pragma once
#include <cmath>
#include <cstdint>

#include "layerforge/detail/host_device.h"

namespace layerforge {
namespace detail {

// splitmix64's finaliser: a bijection of 64-bit integers with good avalanche.
LAYERFORGE_HOST_DEVICE uint64_t dropout_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Once per call: the seed's key.
LAYERFORGE_HOST_DEVICE uint64_t dropout_key(uint64_t seed) { return dropout_mix64(seed + 0x632BE59BD9B4E019ULL); }

// 53 random bits for element idx.
LAYERFORGE_HOST_DEVICE uint64_t dropout_bits53(uint64_t key, uint64_t idx) {
    return dropout_mix64(idx * 0x9E3779B97F4A7C15ULL + key) >> 11;
}

// Keep element idx with probability 1 - p (p in [0, 1)).
inline bool dropout_keep(uint64_t key, uint64_t idx, double p) {
    return static_cast<double>(dropout_bits53(key, idx)) * (1.0 / 9007199254740992.0) >= p;
}

// The integer form: keep  <=>  dropout_bits53(key, idx) >= dropout_threshold(p).
inline uint64_t dropout_threshold(double p) {
    return static_cast<uint64_t>(std::ceil(p * 9007199254740992.0));
}

}  // namespace detail
}  // namespace layerforge
