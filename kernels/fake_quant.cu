// Fused fake quantizers, the GPU twins of compress_core::quant::{affine, symmetric}'s CPU ops,
// forward only (their straight-through backward is composed from tensor ops on the device).
// Every product, sum and quotient is rounded on its own (__fmul_rn, ...), never contracted to
// an FMA, so the values are the CPU op's bit for bit; rintf rounds half to even as rne_f32 does.
//
// Bounds are per tensor (groups = 1) or vary along one axis: element i uses bound
// (i / inner) % groups.

#include <stdint.h>

// Affine quantizer with bounds l < u and `bits` bits.
//   clip_codes = 0 (DDTB): c = clamp(x, l, u), s = (1 / (u - l)) n, z = rint(s l) + 2^(b-1),
//                          q = (rint(c s - z) + z) / s
//   clip_codes = 1 (IntraQ / FDDA asymmetric): s = n / max(u - l, 1e-8),
//                          q = (clamp(rint(s x - z), -2^(b-1), 2^(b-1) - 1) + z) / s
extern "C" __global__ void affine_fake_quant_f32(
    const float* __restrict__ x, const float* __restrict__ lower, const float* __restrict__ upper,
    float* __restrict__ q, uint32_t len, uint32_t groups, uint32_t inner, uint32_t bits, uint32_t clip_codes) {
    const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    const uint32_t k = groups == 1 ? 0 : (i / inner) % groups;
    const float l = lower[k], u = upper[k];
    const float n = (float)((1u << bits) - 1u);
    const float half = (float)(1u << (bits - 1u));
    const float width = __fsub_rn(u, l);
    const float s = clip_codes ? __fdiv_rn(n, fmaxf(width, 1e-8f)) : __fmul_rn(__fdiv_rn(1.0f, width), n);
    const float z = __fadd_rn(rintf(__fmul_rn(s, l)), half);
    const float xi = x[i];
    float code;
    if (clip_codes) {
        code = fminf(fmaxf(rintf(__fsub_rn(__fmul_rn(s, xi), z)), -half), __fsub_rn(half, 1.0f));
    } else {
        const float c = fminf(fmaxf(xi, l), u);
        code = rintf(__fsub_rn(__fmul_rn(c, s), z));
    }
    q[i] = __fdiv_rn(__fadd_rn(code, z), s);
}

// Symmetric quantizer on [-alpha, alpha]: q = rint(clamp(x, -alpha, alpha) / alpha * up) * alpha * down,
// up = 2^(b-1) - 1, down = 1 / up (rounded to f32 on the host, as the CPU op does).
extern "C" __global__ void symmetric_fake_quant_f32(
    const float* __restrict__ x, const float* __restrict__ alpha, float* __restrict__ q, uint32_t len, float up,
    float down) {
    const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    const float a = alpha[0];
    const float c = fminf(fmaxf(x[i], -a), a);
    q[i] = __fmul_rn(__fmul_rn(rintf(__fmul_rn(__fdiv_rn(c, a), up)), a), down);
}
