// The 1xN block-sparse product on the packed `Bsr1xN` format (compress_core::sparse::bsr), the
// GPU twin of `conv1x1_nchw` (compress_core::sparse::kernel), and the NCHW im2col that runs a
// K x K convolution through it ("taps as channels": virtual input channel j*K*K + ky*K + kx).
//
//   y[b, g*N + i, p] = bias[g*N + i] + sum_{e in indptr[g]..indptr[g+1]} data[e*N + i] * x[b, indices[e], p]
//
// One thread per (sample b, group g, pixel p): it keeps the group's N accumulators in registers,
// reads x[b, j, p] once per kept block (consecutive threads read consecutive pixels, so the loads
// coalesce) and the block's N weights (the same address across the warp: a broadcast). Grid:
// x = ceil(pixels / 128), y = C_out / N, z = batch (see compress_core::cuda::layout).

#include <stdint.h>

template <int N>
__device__ __forceinline__ void onexn_nchw_body(
    const float* __restrict__ x, const uint32_t* __restrict__ indptr, const uint32_t* __restrict__ indices,
    const float* __restrict__ data, const float* __restrict__ bias, float* __restrict__ y,
    uint32_t c_in, uint32_t c_out, uint32_t pixels) {
    const uint32_t p = blockIdx.x * blockDim.x + threadIdx.x;
    const uint32_t g = blockIdx.y;
    const uint32_t b = blockIdx.z;
    if (p >= pixels) return;
    float acc[N];
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = 0.0f;
    const float* xb = x + (size_t)b * c_in * pixels + p;
    for (uint32_t e = indptr[g]; e < indptr[g + 1]; ++e) {
        const float v = xb[(size_t)indices[e] * pixels];
        const float* w = data + (size_t)e * N;
#pragma unroll
        for (int i = 0; i < N; ++i) acc[i] = fmaf(w[i], v, acc[i]);
    }
    float* yb = y + ((size_t)b * c_out + (size_t)g * N) * pixels + p;
#pragma unroll
    for (int i = 0; i < N; ++i) yb[(size_t)i * pixels] = acc[i] + (bias ? bias[g * N + i] : 0.0f);
}

#define ONEXN_NCHW(N)                                                                                     \
    extern "C" __global__ void onexn_nchw_n##N(                                                           \
        const float* x, const uint32_t* indptr, const uint32_t* indices, const float* data,              \
        const float* bias, float* y, uint32_t c_in, uint32_t c_out, uint32_t pixels) {                    \
        onexn_nchw_body<N>(x, indptr, indices, data, bias, y, c_in, c_out, pixels);                       \
    }

ONEXN_NCHW(1)
ONEXN_NCHW(2)
ONEXN_NCHW(4)
ONEXN_NCHW(8)
ONEXN_NCHW(16)
ONEXN_NCHW(32)

// Any other N: one output row of the group per pass over its blocks.
extern "C" __global__ void onexn_nchw_any(
    const float* x, const uint32_t* indptr, const uint32_t* indices, const float* data, const float* bias,
    float* y, uint32_t c_in, uint32_t c_out, uint32_t pixels, uint32_t n) {
    const uint32_t p = blockIdx.x * blockDim.x + threadIdx.x;
    const uint32_t g = blockIdx.y;
    const uint32_t b = blockIdx.z;
    if (p >= pixels) return;
    const float* xb = x + (size_t)b * c_in * pixels + p;
    for (uint32_t i = 0; i < n; ++i) {
        float acc = 0.0f;
        for (uint32_t e = indptr[g]; e < indptr[g + 1]; ++e) acc = fmaf(data[(size_t)e * n + i], xb[(size_t)indices[e] * pixels], acc);
        y[((size_t)b * c_out + (size_t)g * n + i) * pixels + p] = acc + (bias ? bias[g * n + i] : 0.0f);
    }
}

// NCHW im2col: cols[b, j*K*K + ky*K + kx, oy*ow + ox] = x[b, j, oy*s + ky - pad, ox*s + kx - pad]
// (0 outside the image). One thread per (b, virtual channel r, output pixel q).
extern "C" __global__ void im2col_nchw(
    const float* __restrict__ x, float* __restrict__ cols, uint32_t c_in, uint32_t h, uint32_t w, uint32_t k,
    uint32_t stride, uint32_t pad, uint32_t oh, uint32_t ow) {
    const uint32_t q = blockIdx.x * blockDim.x + threadIdx.x;
    const uint32_t r = blockIdx.y;
    const uint32_t b = blockIdx.z;
    const uint32_t out_pixels = oh * ow;
    if (q >= out_pixels) return;
    const uint32_t kk = k * k;
    const uint32_t j = r / kk, t = r % kk, ky = t / k, kx = t % k;
    const int iy = (int)((q / ow) * stride + ky) - (int)pad;
    const int ix = (int)((q % ow) * stride + kx) - (int)pad;
    float v = 0.0f;
    if (iy >= 0 && iy < (int)h && ix >= 0 && ix < (int)w) v = x[(((size_t)b * c_in + j) * h + iy) * w + ix];
    cols[((size_t)b * c_in * kk + r) * out_pixels + q] = v;
}
