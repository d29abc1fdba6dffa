// 2-D convolutions on the CPU through oneDNN, as XLA FFI handlers (jaxdenoise.native.onednn).
//
// XLA's CPU backend runs the U-Net's 3x3 convolutions (through YNNPACK or Eigen) at a third to a half of the
// rate oneDNN reaches on the same core (docs/benchmarks.md, "Where the U-Net step's time goes"), and the
// kernel gradient slowest of all. These handlers run the three products of a convolution with oneDNN's own
// kernels, in the layouts XLA already holds (activations NHWC, kernels HWIO), so no layout change crosses
// the boundary:
//   JdConvForward(x, w) -> y           y = conv(x, w)                 ("forward_training")
//   JdConvBackwardData(g, w) -> dx     dx = d conv(x, w) / dx . g      (also: a transposed conv of g)
//   JdConvBackwardWeights(x, g) -> dw  dw = d conv(x, w) / dw . g
// x [N, IH, IW, IC], w [KH, KW, IC, OC], y / g [N, OH, OW, OC]; stride s and zero padding (lo, hi) on both
// spatial axes, as attributes: OH = (IH + lo + hi - KH) / s + 1. float32 throughout, or bfloat16 throughout
// (the same names with a "Bf16" suffix: AMX / AVX512-BF16 kernels on CPUs that have them; oneDNN accumulates
// in float32 and rounds each result once).
//
// Threads: each call runs on `threads` OpenMP threads (oneDNN's GNU-OpenMP build): 1 when XLA runs
// several small calls side by side (the micro-batched train step), all cores (0) for one large call.
// Primitives are created once per shape and thread count and then shared (oneDNN primitives are
// immutable and may run concurrently); each calling thread keeps its own scratch space.
#include <omp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

namespace {

enum Kind { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

struct Shape {
  int64_t n, ih, iw, ic, oh, ow, oc, kh, kw, stride, lo, hi, threads;
  dt type;
  auto tie() const { return std::tie(n, ih, iw, ic, oh, ow, oc, kh, kw, stride, lo, hi, threads, type); }
};

struct Key {
  int kind;
  Shape s;
  bool operator<(const Key& o) const {
    return kind != o.kind ? kind < o.kind : s.tie() < o.s.tie();
  }
};

// One ready primitive: its weights layout (the kernel is reordered from / to HWIO when it differs) and
// the scratch space it needs.
struct Prepared {
  dnnl::primitive primitive;
  memory::desc weights;
  bool reorder_weights = false;
  dnnl::primitive reorder;
  size_t scratch_bytes = 0;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::desc Src(const Shape& s) { return memory::desc({s.n, s.ic, s.ih, s.iw}, s.type, tag::nhwc); }
memory::desc Dst(const Shape& s) { return memory::desc({s.n, s.oc, s.oh, s.ow}, s.type, tag::nhwc); }
memory::desc UserWeights(const Shape& s) { return memory::desc({s.oc, s.ic, s.kh, s.kw}, s.type, tag::hwio); }
memory::desc AnyWeights(const Shape& s) { return memory::desc({s.oc, s.ic, s.kh, s.kw}, s.type, tag::any); }

std::shared_ptr<Prepared> Prepare(const Key& key) {
  static std::mutex mu;
  static std::map<Key, std::shared_ptr<Prepared>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  const Shape& s = key.s;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per-thread scratch: calls may overlap
  const memory::dims strides = {s.stride, s.stride}, lo = {s.lo, s.lo}, hi = {s.hi, s.hi};
  const auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(Engine(), dnnl::prop_kind::forward_training, algo, Src(s),
                                                AnyWeights(s), Dst(s), strides, lo, hi, attr);
  auto p = std::make_shared<Prepared>();
  bool weights_are_output = false;
  if (key.kind == kForward) {
    p->primitive = dnnl::convolution_forward(fwd);
    p->weights = fwd.weights_desc();
    p->scratch_bytes = fwd.scratchpad_desc().get_size();
  } else if (key.kind == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(Engine(), algo, Src(s), AnyWeights(s), Dst(s), strides,
                                                       lo, hi, fwd, attr);
    p->primitive = dnnl::convolution_backward_data(pd);
    p->weights = pd.weights_desc();
    p->scratch_bytes = pd.scratchpad_desc().get_size();
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(Engine(), algo, Src(s), AnyWeights(s), Dst(s),
                                                          strides, lo, hi, fwd, attr);
    p->primitive = dnnl::convolution_backward_weights(pd);
    p->weights = pd.diff_weights_desc();
    p->scratch_bytes = pd.scratchpad_desc().get_size();
    weights_are_output = true;
  }
  p->reorder_weights = p->weights != UserWeights(s);
  if (p->reorder_weights) {
    p->reorder = weights_are_output
                     ? dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), p->weights, Engine(), UserWeights(s)))
                     : dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), UserWeights(s), Engine(), p->weights));
  }
  cache.emplace(key, p);
  return p;
}

void* Grow(std::vector<uint8_t>& buffer, size_t bytes) {
  if (buffer.size() < bytes + 64) buffer.resize(bytes + 64);
  return buffer.data();
}

// a: x (forward, weights) or g (data); b: w (forward, data) or g (weights); out: y, dx or dw.
ffi::Error Run(Kind kind, const Shape& s, void* a, void* b, void* out) {
  thread_local std::vector<uint8_t> scratch_buffer, weights_buffer;
  try {
    omp_set_num_threads(s.threads > 0 ? static_cast<int>(s.threads) : omp_get_num_procs());
    auto p = Prepare(Key{kind, s});
    dnnl::engine& engine = Engine();
    dnnl::stream stream(engine);
    memory scratch(memory::desc({static_cast<int64_t>(p->scratch_bytes)}, dt::u8, tag::x), engine,
                   Grow(scratch_buffer, p->scratch_bytes));
    memory src_mem(Src(s), engine), dst_mem(Dst(s), engine), user_w(UserWeights(s), engine);
    memory w = user_w;
    if (p->reorder_weights) w = memory(p->weights, engine, Grow(weights_buffer, p->weights.get_size()));
    if (kind == kForward || kind == kBackwardData) {
      user_w.set_data_handle(b);
      if (p->reorder_weights) p->reorder.execute(stream, {{DNNL_ARG_FROM, user_w}, {DNNL_ARG_TO, w}});
      if (kind == kForward) {
        src_mem.set_data_handle(a);
        dst_mem.set_data_handle(out);
        p->primitive.execute(stream, {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, dst_mem},
                                      {DNNL_ARG_SCRATCHPAD, scratch}});
      } else {
        dst_mem.set_data_handle(a);
        src_mem.set_data_handle(out);
        p->primitive.execute(stream, {{DNNL_ARG_DIFF_DST, dst_mem}, {DNNL_ARG_WEIGHTS, w},
                                      {DNNL_ARG_DIFF_SRC, src_mem}, {DNNL_ARG_SCRATCHPAD, scratch}});
      }
    } else {
      src_mem.set_data_handle(a);
      dst_mem.set_data_handle(b);
      user_w.set_data_handle(out);
      p->primitive.execute(stream, {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_DIFF_DST, dst_mem},
                                    {DNNL_ARG_DIFF_WEIGHTS, w}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (p->reorder_weights) p->reorder.execute(stream, {{DNNL_ARG_FROM, w}, {DNNL_ARG_TO, user_w}});
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

Shape Make(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y, int64_t stride,
           int64_t lo, int64_t hi, int64_t threads, dt type) {
  return Shape{x[0], x[1], x[2], x[3], y[1], y[2], y[3], w[0], w[1], stride, lo, hi, threads, type};
}

template <ffi::DataType T>
constexpr dt OneDnnType() {
  return T == ffi::DataType::BF16 ? dt::bf16 : dt::f32;
}

template <ffi::DataType T>
ffi::Error Forward(ffi::Buffer<T> x, ffi::Buffer<T> w, ffi::ResultBuffer<T> y, int64_t stride, int64_t lo,
                   int64_t hi, int64_t threads) {
  Shape s = Make(x.dimensions(), w.dimensions(), y->dimensions(), stride, lo, hi, threads, OneDnnType<T>());
  return Run(kForward, s, x.untyped_data(), w.untyped_data(), y->untyped_data());
}

template <ffi::DataType T>
ffi::Error BackwardData(ffi::Buffer<T> g, ffi::Buffer<T> w, ffi::ResultBuffer<T> dx, int64_t stride, int64_t lo,
                        int64_t hi, int64_t threads) {
  Shape s = Make(dx->dimensions(), w.dimensions(), g.dimensions(), stride, lo, hi, threads, OneDnnType<T>());
  return Run(kBackwardData, s, g.untyped_data(), w.untyped_data(), dx->untyped_data());
}

template <ffi::DataType T>
ffi::Error BackwardWeights(ffi::Buffer<T> x, ffi::Buffer<T> g, ffi::ResultBuffer<T> dw, int64_t stride, int64_t lo,
                           int64_t hi, int64_t threads) {
  Shape s = Make(x.dimensions(), dw->dimensions(), g.dimensions(), stride, lo, hi, threads, OneDnnType<T>());
  return Run(kBackwardWeights, s, x.untyped_data(), g.untyped_data(), dw->untyped_data());
}

}  // namespace

#define JD_BIND(T)                                                                                              \
  ffi::Ffi::Bind().Arg<ffi::Buffer<T>>().Arg<ffi::Buffer<T>>().Ret<ffi::Buffer<T>>().Attr<int64_t>("stride") \
      .Attr<int64_t>("lo").Attr<int64_t>("hi").Attr<int64_t>("threads")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JdConvForward, Forward<ffi::DataType::F32>, JD_BIND(ffi::DataType::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JdConvBackwardData, BackwardData<ffi::DataType::F32>, JD_BIND(ffi::DataType::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JdConvBackwardWeights, BackwardWeights<ffi::DataType::F32>,
                              JD_BIND(ffi::DataType::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JdConvForwardBf16, Forward<ffi::DataType::BF16>, JD_BIND(ffi::DataType::BF16));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JdConvBackwardDataBf16, BackwardData<ffi::DataType::BF16>,
                              JD_BIND(ffi::DataType::BF16));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JdConvBackwardWeightsBf16, BackwardWeights<ffi::DataType::BF16>,
                              JD_BIND(ffi::DataType::BF16));
