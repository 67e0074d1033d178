/* QMCU_* custom options (flexbuffer map, docs/qmcu_ops.md §1.6) -> qmcu parameter structs.
 * Depends only on flatbuffers/flexbuffers.h and the qmcu headers; the TFLM glue
 * (qmcu_tflm_ops.cc) and the options-contract test driver
 * (test/options_contract_main.cc) both call it. */
#include "qmcu_options_parse.h"

#include <cstdint>
#include <cstring>

#include "flatbuffers/flexbuffers.h"

namespace {

// Reads required keys of one options map; the first failure clears ok() and every later read
// returns 0, so a parser reads all its keys and checks ok() once.
class OptionsReader {
 public:
  OptionsReader(const uint8_t* buf, size_t len) : map_(flexbuffers::Map::EmptyMap()) {
    ok_ = buf != nullptr && len >= 3 &&
          len < static_cast<size_t>(FLATBUFFERS_MAX_BUFFER_SIZE) &&
          flexbuffers::VerifyBuffer(buf, len);
    if (!ok_) return;
    const flexbuffers::Reference root = flexbuffers::GetRoot(buf, len);
    ok_ = root.IsMap();
    if (!ok_) return;
    map_ = root.AsMap();
    ok_ = Int("version") == QMCU_OPTIONS_VERSION;
  }

  bool ok() const { return ok_; }

  int32_t Int(const char* key) {
    int32_t value = 0;
    if (ok_ && !ToInt32(map_[key], &value)) ok_ = false;
    return ok_ ? value : 0;
  }

  // An optional int: `fallback` when the key is absent (or null).
  int32_t IntOr(const char* key, int32_t fallback) {
    if (ok_ && map_[key].IsNull()) return fallback;
    return Int(key);
  }

  // A bool, or the int 0 / 1.
  int32_t Bool(const char* key) {
    if (!ok_) return 0;
    const flexbuffers::Reference ref = map_[key];
    if (ref.IsBool()) return ref.AsBool() ? 1 : 0;
    int32_t value = 0;
    if (!ToInt32(ref, &value) || (value != 0 && value != 1)) ok_ = false;
    return ok_ ? value : 0;
  }

  // A logical [N, H, W, C]: a vector (untyped, typed or fixed typed) of exactly 4 ints.
  qmcu_dims Dims(const char* key) {
    qmcu_dims d = {0, 0, 0, 0};
    if (!ok_) return d;
    const flexbuffers::Reference ref = map_[key];
    int32_t v[4] = {0, 0, 0, 0};
    if (ref.IsFixedTypedVector()) {
      ok_ = FourInts(ref.AsFixedTypedVector(), v);
    } else if (ref.IsTypedVector()) {
      ok_ = FourInts(ref.AsTypedVector(), v);
    } else if (ref.IsVector() && !ref.IsMap()) {
      ok_ = FourInts(ref.AsVector(), v);
    } else {
      ok_ = false;
    }
    if (ok_) {
      d.n = v[0];
      d.h = v[1];
      d.w = v[2];
      d.c = v[3];
    }
    return d;
  }

  qmcu_padding Padding() {
    if (!ok_) return QMCU_PADDING_VALID;
    const flexbuffers::Reference ref = map_["padding"];
    if (ref.IsString()) {
      const flexbuffers::String s = ref.AsString();
      if (Equals(s, "SAME")) return QMCU_PADDING_SAME;
      if (Equals(s, "VALID")) return QMCU_PADDING_VALID;
      if (Equals(s, "EXPLICIT")) return QMCU_PADDING_EXPLICIT;
    }
    ok_ = false;
    return QMCU_PADDING_VALID;
  }

  // Strides, dilations (required unless `dilation_optional`, then default 1) and pads.
  qmcu_geometry Geometry(bool dilation_optional) {
    qmcu_geometry g;
    g.stride_h = Int("stride_h");
    g.stride_w = Int("stride_w");
    g.dilation_h = dilation_optional ? IntOr("dilation_h", 1) : Int("dilation_h");
    g.dilation_w = dilation_optional ? IntOr("dilation_w", 1) : Int("dilation_w");
    g.pad_top = Int("pad_top");
    g.pad_bottom = Int("pad_bottom");
    g.pad_left = Int("pad_left");
    g.pad_right = Int("pad_right");
    Padding();  // required and valid, though the kernels use the explicit pads only
    return g;
  }

 private:
  static bool ToInt32(const flexbuffers::Reference& ref, int32_t* out) {
    if (ref.IsInt()) {
      const int64_t v = ref.AsInt64();
      if (v < INT32_MIN || v > INT32_MAX) return false;
      *out = static_cast<int32_t>(v);
      return true;
    }
    if (ref.IsUInt()) {
      const uint64_t v = ref.AsUInt64();
      if (v > static_cast<uint64_t>(INT32_MAX)) return false;
      *out = static_cast<int32_t>(v);
      return true;
    }
    return false;
  }

  template <typename Vector>
  static bool FourInts(const Vector& vec, int32_t out[4]) {
    if (vec.size() != 4) return false;
    for (size_t i = 0; i < 4; ++i) {
      if (!ToInt32(vec[i], &out[i])) return false;
    }
    return true;
  }

  static bool Equals(const flexbuffers::String& s, const char* literal) {
    const size_t n = std::strlen(literal);
    return s.length() == n && std::memcmp(s.c_str(), literal, n) == 0;
  }

  flexbuffers::Map map_;
  bool ok_;
};

bool ParseConvLike(const uint8_t* buf, size_t len, bool depthwise, qmcu_conv_params* out) {
  OptionsReader r(buf, len);
  qmcu_conv_params p;
  p.input = r.Dims("in_shape");
  p.filter = r.Dims("filter_shape");
  p.output = r.Dims("out_shape");
  p.in_bits = r.Int("in_bits");
  p.w_bits = r.Int("w_bits");
  p.out_bits = r.Int("out_bits");
  p.in_zero_point = r.Int("in_zero_point");
  p.out_zero_point = r.Int("out_zero_point");
  p.act_min = r.Int("act_min");
  p.act_max = r.Int("act_max");
  p.depth_multiplier = depthwise ? r.Int("depth_multiplier") : 1;
  p.geometry = r.Geometry(/*dilation_optional=*/false);
  if (!r.ok() || out == nullptr) return false;
  *out = p;
  return true;
}

bool ParseRequant(const uint8_t* buf, size_t len, qmcu_requant_params* out) {
  OptionsReader r(buf, len);
  qmcu_requant_params p;
  p.shape = r.Dims("shape");
  p.in_bits = r.Int("in_bits");
  p.out_bits = r.Int("out_bits");
  p.in_zero_point = r.Int("in_zero_point");
  p.out_zero_point = r.Int("out_zero_point");
  p.multiplier = r.Int("multiplier");
  p.shift = r.Int("shift");
  if (!r.ok() || out == nullptr) return false;
  *out = p;
  return true;
}

}  // namespace

extern "C" {

bool qmcu_parse_conv_2d_options(const uint8_t* buf, size_t len, qmcu_conv_params* out) {
  return ParseConvLike(buf, len, /*depthwise=*/false, out);
}

bool qmcu_parse_depthwise_conv_2d_options(const uint8_t* buf, size_t len,
                                          qmcu_conv_params* out) {
  return ParseConvLike(buf, len, /*depthwise=*/true, out);
}

bool qmcu_parse_add_options(const uint8_t* buf, size_t len, qmcu_add_params* out) {
  OptionsReader r(buf, len);
  qmcu_add_params p;
  p.shape = r.Dims("shape");
  p.in1_bits = r.Int("in1_bits");
  p.in2_bits = r.Int("in2_bits");
  p.out_bits = r.Int("out_bits");
  p.in1_zero_point = r.Int("in1_zero_point");
  p.in2_zero_point = r.Int("in2_zero_point");
  p.out_zero_point = r.Int("out_zero_point");
  p.left_shift = r.Int("left_shift");
  p.in1_multiplier = r.Int("in1_multiplier");
  p.in1_shift = r.Int("in1_shift");
  p.in2_multiplier = r.Int("in2_multiplier");
  p.in2_shift = r.Int("in2_shift");
  p.out_multiplier = r.Int("out_multiplier");
  p.out_shift = r.Int("out_shift");
  p.act_min = r.Int("act_min");
  p.act_max = r.Int("act_max");
  if (!r.ok() || out == nullptr) return false;
  *out = p;
  return true;
}

bool qmcu_parse_average_pool_2d_options(const uint8_t* buf, size_t len,
                                        qmcu_avg_pool_params* out) {
  OptionsReader r(buf, len);
  qmcu_avg_pool_params p;
  p.input = r.Dims("in_shape");
  p.output = r.Dims("out_shape");
  p.filter_h = r.Int("filter_h");
  p.filter_w = r.Int("filter_w");
  p.in_bits = r.Int("in_bits");
  p.out_bits = r.Int("out_bits");
  p.in_zero_point = r.Int("in_zero_point");
  p.out_zero_point = r.Int("out_zero_point");
  p.act_min = r.Int("act_min");
  p.act_max = r.Int("act_max");
  p.rescale = r.Bool("rescale");
  p.multiplier = r.Int("multiplier");
  p.shift = r.Int("shift");
  p.geometry = r.Geometry(/*dilation_optional=*/true);
  if (!r.ok() || out == nullptr) return false;
  *out = p;
  return true;
}

bool qmcu_parse_pack_options(const uint8_t* buf, size_t len, qmcu_requant_params* out) {
  return ParseRequant(buf, len, out);
}

bool qmcu_parse_unpack_options(const uint8_t* buf, size_t len, qmcu_requant_params* out) {
  return ParseRequant(buf, len, out);
}

bool qmcu_parse_padding(const uint8_t* buf, size_t len, qmcu_padding* out) {
  OptionsReader r(buf, len);
  const qmcu_padding padding = r.Padding();
  if (!r.ok() || out == nullptr) return false;
  *out = padding;
  return true;
}

}  // extern "C"
