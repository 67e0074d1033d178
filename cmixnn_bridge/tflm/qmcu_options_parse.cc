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
  // max_version: the newest version this map may have (QMCU_PATCH_STAGE: 2; others: 1).
  OptionsReader(const uint8_t* buf, size_t len, int32_t max_version = QMCU_OPTIONS_VERSION)
      : map_(flexbuffers::Map::EmptyMap()) {
    ok_ = buf != nullptr && len >= 3 &&
          len < static_cast<size_t>(FLATBUFFERS_MAX_BUFFER_SIZE) &&
          flexbuffers::VerifyBuffer(buf, len);
    if (!ok_) return;
    const flexbuffers::Reference root = flexbuffers::GetRoot(buf, len);
    ok_ = root.IsMap();
    if (!ok_) return;
    map_ = root.AsMap();
    version_ = Int("version");
    ok_ = ok_ && version_ >= QMCU_OPTIONS_VERSION && version_ <= max_version;
  }

  int32_t version() const { return version_; }

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

  // A vector of ints (untyped, typed or fixed typed) into out[0..n); false unless its length
  // is exactly n (n = -1: any length up to `limit`, returned in *length).
  bool Ints(const char* key, int32_t* out, int32_t n, int32_t limit, int32_t* length) {
    if (!ok_) return false;
    ok_ = IntVector(map_[key], out, n, limit, length);
    return ok_;
  }

  // A nested map of the root map's vector `key` at `index` (stage options).
  static bool At(const flexbuffers::Map& map, const char* key, size_t index,
                 flexbuffers::Map* out) {
    const flexbuffers::Reference ref = map[key];
    if (!ref.IsVector() || ref.IsMap()) return false;
    const flexbuffers::Vector vec = ref.AsVector();
    if (index >= vec.size() || !vec[index].IsMap()) return false;
    *out = vec[index].AsMap();
    return true;
  }

  const flexbuffers::Map& map() const { return map_; }

  // A map without a version key (the tensors and layers of a stage).
  explicit OptionsReader(const flexbuffers::Map& map) : map_(map), ok_(true) {}

  bool Has(const char* key) const { return !map_[key].IsNull(); }

  static bool IntVector(const flexbuffers::Reference& ref, int32_t* out, int32_t n,
                        int32_t limit, int32_t* length) {
    if (ref.IsFixedTypedVector()) return Copy(ref.AsFixedTypedVector(), out, n, limit, length);
    if (ref.IsTypedVector()) return Copy(ref.AsTypedVector(), out, n, limit, length);
    if (ref.IsVector() && !ref.IsMap()) return Copy(ref.AsVector(), out, n, limit, length);
    return false;
  }

  template <typename Vector>
  static bool Copy(const Vector& vec, int32_t* out, int32_t n, int32_t limit, int32_t* length) {
    const size_t size = vec.size();
    if (n >= 0 ? size != static_cast<size_t>(n) : size > static_cast<size_t>(limit)) {
      return false;
    }
    for (size_t i = 0; i < size; ++i) {
      if (out != nullptr && !ToInt32(vec[i], &out[i])) return false;
      if (out == nullptr) {
        int32_t unused = 0;
        if (!ToInt32(vec[i], &unused)) return false;
      }
    }
    if (length != nullptr) *length = static_cast<int32_t>(size);
    return true;
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
  int32_t version_ = 0;
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

// ---- QMCU_PATCH_STAGE ----
constexpr int32_t kMaxGrid = 4096;
constexpr int32_t kMaxChannels = 1 << 20;

constexpr int32_t kStageVersion = 2;  // version 2: per-patch widths (docs §8.1)

struct StageCounts {
  int32_t grid[2];
  int32_t tensors;
  int32_t layers;
  int32_t requant_words;
  int32_t ext_words;  // version 2's section (0: none, the pool is a version-1 pool)
};

int32_t VectorSize(const flexbuffers::Map& map, const char* key) {
  const flexbuffers::Reference ref = map[key];
  if (!ref.IsVector() || ref.IsMap()) return -1;
  const size_t size = ref.AsVector().size();
  return size < static_cast<size_t>(kMaxGrid) * 16 ? static_cast<int32_t>(size) : -1;
}

// The counts the pool size depends on; false when the map is not a stage map.
bool StageSizes(OptionsReader& root, StageCounts* counts) {
  int32_t n = 0;
  if (!root.ok() || !root.Ints("grid", counts->grid, 2, 0, nullptr)) return false;
  if (counts->grid[0] < 1 || counts->grid[1] < 1 || counts->grid[0] > kMaxGrid ||
      counts->grid[1] > kMaxGrid) {
    return false;
  }
  counts->tensors = VectorSize(root.map(), "tensors");
  counts->layers = VectorSize(root.map(), "layers");
  if (counts->tensors < 2 || counts->layers != counts->tensors - 1) return false;
  counts->requant_words = 0;
  const int32_t patches = counts->grid[0] * counts->grid[1];
  int32_t tables = 0;
  bool any = false;
  for (n = 0; n < counts->tensors; ++n) {
    flexbuffers::Map tensor = flexbuffers::Map::EmptyMap();
    if (!OptionsReader::At(root.map(), "tensors", static_cast<size_t>(n), &tensor)) return false;
    OptionsReader r(tensor);
    if (r.Has("patch_bits")) {
      any = true;
      tables += 2 * patches;
    }
  }
  for (n = 0; n < counts->layers; ++n) {
    flexbuffers::Map layer = flexbuffers::Map::EmptyMap();
    int32_t length = 0;
    if (!OptionsReader::At(root.map(), "layers", static_cast<size_t>(n), &layer)) return false;
    OptionsReader r(layer);
    if (!r.Ints("multiplier", nullptr, -1, kMaxChannels, &length)) return false;
    counts->requant_words += 2 * length;
    if (r.Has("patch_variants")) {
      if (!r.Ints("variants", nullptr, -1, QMCU_STAGE_VARIANT_WORDS * patches, &length) ||
          length % QMCU_STAGE_VARIANT_WORDS != 0) {
        return false;
      }
      any = true;
      tables += patches + length;
    }
  }
  if (any && root.version() != kStageVersion) return false;  // tables are version 2's
  counts->ext_words =
      any ? counts->tensors + QMCU_STAGE_LAYER_EXT_WORDS * counts->layers + tables : 0;
  return true;
}

size_t StageWords(const StageCounts& c) {
  return qmcu_stage_pool_words_for(c.tensors, c.layers, c.grid[0], c.grid[1],
                                   c.requant_words) +
         static_cast<size_t>(c.ext_words);
}

// Version 2's section at pool[at]: index words, then the tables (docs §8.3).
bool ParseStageExtension(const flexbuffers::Map& root, const StageCounts& c, int32_t* pool,
                         int32_t at) {
  const int32_t patches = c.grid[0] * c.grid[1];
  int32_t* index = pool + at;
  int32_t where = at + c.tensors + QMCU_STAGE_LAYER_EXT_WORDS * c.layers;
  for (int32_t t = 0; t < c.tensors; ++t) {
    flexbuffers::Map map = flexbuffers::Map::EmptyMap();
    if (!OptionsReader::At(root, "tensors", static_cast<size_t>(t), &map)) return false;
    OptionsReader r(map);
    index[t] = -1;
    if (!r.Has("patch_bits")) continue;
    index[t] = where;
    r.Ints("patch_bits", pool + where, patches, 0, nullptr);
    r.Ints("patch_zero_points", pool + where + patches, patches, 0, nullptr);
    if (!r.ok()) return false;
    where += 2 * patches;
  }
  for (int32_t n = 0; n < c.layers; ++n) {
    flexbuffers::Map map = flexbuffers::Map::EmptyMap();
    if (!OptionsReader::At(root, "layers", static_cast<size_t>(n), &map)) return false;
    OptionsReader r(map);
    int32_t length = 0;
    int32_t* e = index + c.tensors + QMCU_STAGE_LAYER_EXT_WORDS * n;
    e[0] = 0;
    e[1] = -1;
    e[2] = -1;
    if (!r.Has("patch_variants")) continue;
    r.Ints("patch_variants", pool + where, patches, 0, nullptr);
    r.Ints("variants", pool + where + patches, -1, QMCU_STAGE_VARIANT_WORDS * patches, &length);
    e[2] = r.Int("variant_data");
    if (!r.ok()) return false;
    e[0] = length / QMCU_STAGE_VARIANT_WORDS;
    e[1] = where;
    where += patches + length;
  }
  return where == at + c.ext_words;
}

bool ParseStageTensor(const flexbuffers::Map& map, const StageCounts& c, int32_t* record,
                      int32_t* parts) {
  OptionsReader r(map);
  r.Ints("shape", record, 4, 0, nullptr);
  record[4] = r.Int("bits");
  record[5] = r.Int("zero_point");
  record[6] = r.Int("offset");
  r.Ints("rows", parts, 2 * c.grid[0], 0, nullptr);
  r.Ints("cols", parts + 2 * c.grid[0], 2 * c.grid[1], 0, nullptr);
  return r.ok();
}

bool ParseStageLayer(const flexbuffers::Map& map, int32_t* L, int32_t* requant,
                     int32_t requant_at) {
  OptionsReader r(map);
  int32_t length = 0;
  int32_t pair[2] = {0, 0};
  L[QMCU_STAGE_L_KIND] = r.Int("kind");
  r.Ints("inputs", pair, -1, 2, &length);
  L[QMCU_STAGE_L_NUM_INPUTS] = length;
  L[QMCU_STAGE_L_INPUT0] = pair[0];
  L[QMCU_STAGE_L_INPUT1] = length > 1 ? pair[1] : -1;
  pair[0] = pair[1] = QMCU_STAGE_NO_SLOT;
  r.Ints("staging", pair, length, 0, nullptr);
  L[QMCU_STAGE_L_STAGING0] = pair[0];
  L[QMCU_STAGE_L_STAGING1] = pair[1];
  L[QMCU_STAGE_L_OUTPUT] = r.Int("output");
  L[QMCU_STAGE_L_ACT_MIN] = r.Int("act_min");
  L[QMCU_STAGE_L_ACT_MAX] = r.Int("act_max");
  L[QMCU_STAGE_L_FILTER] = r.Int("filter");
  L[QMCU_STAGE_L_BIAS] = r.Int("bias");
  r.Ints("kernel", &L[QMCU_STAGE_L_KERNEL_H], 2, 0, nullptr);
  r.Ints("stride", &L[QMCU_STAGE_L_STRIDE_H], 2, 0, nullptr);
  r.Ints("dilation", &L[QMCU_STAGE_L_DILATION_H], 2, 0, nullptr);
  L[QMCU_STAGE_L_PAD_TOP] = r.Int("pad_top");
  L[QMCU_STAGE_L_PAD_LEFT] = r.Int("pad_left");
  L[QMCU_STAGE_L_DEPTH_MULTIPLIER] = r.Int("depth_multiplier");
  L[QMCU_STAGE_L_KERNEL_SCRATCH] = r.Int("kernel_scratch");
  L[QMCU_STAGE_L_KERNEL_SCRATCH_BYTES] = r.Int("kernel_scratch_bytes");
  r.Ints("multiplier", requant, -1, kMaxChannels, &length);
  r.Ints("shift", requant + length, length, 0, nullptr);
  L[QMCU_STAGE_L_REQUANT_AT] = requant_at;
  L[QMCU_STAGE_L_REQUANT_COUNT] = length;
  return r.ok();
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

bool qmcu_parse_patch_stage_words(const uint8_t* buf, size_t len, size_t* words) {
  OptionsReader root(buf, len, kStageVersion);
  StageCounts c;
  if (!StageSizes(root, &c) || words == nullptr) return false;
  *words = StageWords(c);
  return true;
}

bool qmcu_parse_patch_stage_options(const uint8_t* buf, size_t len, int32_t* pool,
                                    size_t pool_words, qmcu_stage_params* out) {
  OptionsReader root(buf, len, kStageVersion);
  StageCounts c;
  if (!StageSizes(root, &c) || pool == nullptr || out == nullptr) return false;
  const size_t words = StageWords(c);
  if (words != pool_words || words > static_cast<size_t>(INT32_MAX)) return false;
  const int32_t scratch_bytes = root.Int("scratch_bytes");
  if (!root.ok()) return false;
  int32_t* parts = pool + QMCU_STAGE_TENSOR_WORDS * c.tensors;
  const int32_t part_words = 2 * (c.grid[0] + c.grid[1]);
  int32_t* layers = parts + part_words * c.tensors;
  int32_t requant_at = static_cast<int32_t>(layers - pool) + QMCU_STAGE_LAYER_WORDS * c.layers;
  for (int32_t t = 0; t < c.tensors; ++t) {
    flexbuffers::Map map = flexbuffers::Map::EmptyMap();
    if (!OptionsReader::At(root.map(), "tensors", static_cast<size_t>(t), &map) ||
        !ParseStageTensor(map, c, pool + QMCU_STAGE_TENSOR_WORDS * t, parts + part_words * t)) {
      return false;
    }
  }
  for (int32_t n = 0; n < c.layers; ++n) {
    flexbuffers::Map map = flexbuffers::Map::EmptyMap();
    int32_t* L = layers + QMCU_STAGE_LAYER_WORDS * n;
    if (!OptionsReader::At(root.map(), "layers", static_cast<size_t>(n), &map) ||
        !ParseStageLayer(map, L, pool + requant_at, requant_at)) {
      return false;
    }
    requant_at += 2 * L[QMCU_STAGE_L_REQUANT_COUNT];
  }
  if (c.ext_words > 0 && !ParseStageExtension(root.map(), c, pool, requant_at)) return false;
  out->grid_rows = c.grid[0];
  out->grid_cols = c.grid[1];
  out->num_tensors = c.tensors;
  out->num_layers = c.layers;
  out->scratch_bytes = scratch_bytes;
  out->pool_words = static_cast<int32_t>(words);
  out->pool = pool;
  return true;
}

bool qmcu_parse_padding(const uint8_t* buf, size_t len, qmcu_padding* out) {
  OptionsReader r(buf, len);
  const qmcu_padding padding = r.Padding();
  if (!r.ok() || out == nullptr) return false;
  *out = padding;
  return true;
}

}  // extern "C"
