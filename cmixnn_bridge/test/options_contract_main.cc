// Options-contract driver: parses a QMCU_* flexbuffer options blob with the C parsers of
// tflm/qmcu_options_parse.h and prints every parsed field as one JSON object, keyed by the
// option names of docs/qmcu_ops.md (so tests/test_qmcu_options_contract.py compares it with
// what Python's encode_options() wrote).
//
//   options_contract <blob file> <QMCU_OP name>
//
// `version` is printed as the one value the parsers accept; QMCU_CONV_2D also prints the
// depth_multiplier of 1 that its parser sets.
// Exit status: 0 parsed (JSON on stdout), 3 the parser rejected the blob, 2 usage or I/O error
// (not 1, which is what a sanitizer report exits with by default).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "qmcu/qmcu.h"
#include "qmcu_options_parse.h"

namespace {

enum { kParsed = 0, kUsage = 2, kRejected = 3 };

// Writes `{"key": value, ...}` one field at a time.
class JsonObject {
 public:
  JsonObject() {
    std::fputs("{", stdout);
    Int("version", QMCU_OPTIONS_VERSION);  // the parsers accept no other
  }
  ~JsonObject() { std::fputs("}\n", stdout); }

  void Int(const char* key, int32_t value) {
    Key(key);
    std::printf("%ld", static_cast<long>(value));
  }

  void Bool(const char* key, int32_t value) {
    Key(key);
    std::fputs(value != 0 ? "true" : "false", stdout);
  }

  // A string, or null for nullptr.
  void Str(const char* key, const char* value) {
    Key(key);
    if (value == nullptr) {
      std::fputs("null", stdout);
    } else {
      std::printf("\"%s\"", value);
    }
  }

  void Dims(const char* key, const qmcu_dims& d) {
    Key(key);
    std::printf("[%ld, %ld, %ld, %ld]", static_cast<long>(d.n), static_cast<long>(d.h),
                static_cast<long>(d.w), static_cast<long>(d.c));
  }

 private:
  void Key(const char* key) {
    std::printf("%s\"%s\": ", first_ ? "" : ", ", key);
    first_ = false;
  }

  bool first_ = true;
};

// The `padding` key, read on its own (the op parsers require it but do not return it); null
// if qmcu_parse_padding() refuses it.
const char* PaddingName(const std::vector<uint8_t>& blob) {
  qmcu_padding padding;
  if (!qmcu_parse_padding(blob.data(), blob.size(), &padding)) return nullptr;
  switch (padding) {
    case QMCU_PADDING_SAME:
      return "SAME";
    case QMCU_PADDING_VALID:
      return "VALID";
    case QMCU_PADDING_EXPLICIT:
      return "EXPLICIT";
  }
  return "?";
}

void PrintGeometry(JsonObject& json, const qmcu_geometry& g, const std::vector<uint8_t>& blob) {
  json.Int("stride_h", g.stride_h);
  json.Int("stride_w", g.stride_w);
  json.Int("dilation_h", g.dilation_h);
  json.Int("dilation_w", g.dilation_w);
  json.Str("padding", PaddingName(blob));
  json.Int("pad_top", g.pad_top);
  json.Int("pad_bottom", g.pad_bottom);
  json.Int("pad_left", g.pad_left);
  json.Int("pad_right", g.pad_right);
}

int PrintConv(const std::vector<uint8_t>& blob, bool depthwise) {
  qmcu_conv_params p;
  const bool ok = depthwise ? qmcu_parse_depthwise_conv_2d_options(blob.data(), blob.size(), &p)
                            : qmcu_parse_conv_2d_options(blob.data(), blob.size(), &p);
  if (!ok) return kRejected;
  JsonObject json;
  json.Dims("in_shape", p.input);
  json.Dims("filter_shape", p.filter);
  json.Dims("out_shape", p.output);
  json.Int("in_bits", p.in_bits);
  json.Int("w_bits", p.w_bits);
  json.Int("out_bits", p.out_bits);
  json.Int("in_zero_point", p.in_zero_point);
  json.Int("out_zero_point", p.out_zero_point);
  json.Int("act_min", p.act_min);
  json.Int("act_max", p.act_max);
  json.Int("depth_multiplier", p.depth_multiplier);  // QMCU_CONV_2D: always 1
  PrintGeometry(json, p.geometry, blob);
  return kParsed;
}

int PrintAdd(const std::vector<uint8_t>& blob) {
  qmcu_add_params p;
  if (!qmcu_parse_add_options(blob.data(), blob.size(), &p)) return kRejected;
  JsonObject json;
  json.Dims("shape", p.shape);
  json.Int("in1_bits", p.in1_bits);
  json.Int("in2_bits", p.in2_bits);
  json.Int("out_bits", p.out_bits);
  json.Int("in1_zero_point", p.in1_zero_point);
  json.Int("in2_zero_point", p.in2_zero_point);
  json.Int("out_zero_point", p.out_zero_point);
  json.Int("left_shift", p.left_shift);
  json.Int("in1_multiplier", p.in1_multiplier);
  json.Int("in1_shift", p.in1_shift);
  json.Int("in2_multiplier", p.in2_multiplier);
  json.Int("in2_shift", p.in2_shift);
  json.Int("out_multiplier", p.out_multiplier);
  json.Int("out_shift", p.out_shift);
  json.Int("act_min", p.act_min);
  json.Int("act_max", p.act_max);
  return kParsed;
}

int PrintPool(const std::vector<uint8_t>& blob) {
  qmcu_avg_pool_params p;
  if (!qmcu_parse_average_pool_2d_options(blob.data(), blob.size(), &p)) return kRejected;
  JsonObject json;
  json.Dims("in_shape", p.input);
  json.Dims("out_shape", p.output);
  json.Int("filter_h", p.filter_h);
  json.Int("filter_w", p.filter_w);
  json.Int("in_bits", p.in_bits);
  json.Int("out_bits", p.out_bits);
  json.Int("in_zero_point", p.in_zero_point);
  json.Int("out_zero_point", p.out_zero_point);
  json.Int("act_min", p.act_min);
  json.Int("act_max", p.act_max);
  json.Bool("rescale", p.rescale);
  json.Int("multiplier", p.multiplier);
  json.Int("shift", p.shift);
  PrintGeometry(json, p.geometry, blob);
  return kParsed;
}

int PrintRequant(const std::vector<uint8_t>& blob, bool pack) {
  qmcu_requant_params p;
  const bool ok = pack ? qmcu_parse_pack_options(blob.data(), blob.size(), &p)
                       : qmcu_parse_unpack_options(blob.data(), blob.size(), &p);
  if (!ok) return kRejected;
  JsonObject json;
  json.Dims("shape", p.shape);
  json.Int("in_bits", p.in_bits);
  json.Int("out_bits", p.out_bits);
  json.Int("in_zero_point", p.in_zero_point);
  json.Int("out_zero_point", p.out_zero_point);
  json.Int("multiplier", p.multiplier);
  json.Int("shift", p.shift);
  return kParsed;
}

bool ReadFile(const char* path, std::vector<uint8_t>* out) {
  std::FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  uint8_t chunk[4096];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), f)) > 0) {
    out->insert(out->end(), chunk, chunk + n);
  }
  const bool ok = std::ferror(f) == 0;
  std::fclose(f);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <options blob> <QMCU_OP>\n", argv[0]);
    return kUsage;
  }
  std::vector<uint8_t> blob;
  if (!ReadFile(argv[1], &blob)) {
    std::fprintf(stderr, "cannot read %s\n", argv[1]);
    return kUsage;
  }
  const char* op = argv[2];
  int status = kUsage;
  if (std::strcmp(op, "QMCU_CONV_2D") == 0) {
    status = PrintConv(blob, /*depthwise=*/false);
  } else if (std::strcmp(op, "QMCU_DEPTHWISE_CONV_2D") == 0) {
    status = PrintConv(blob, /*depthwise=*/true);
  } else if (std::strcmp(op, "QMCU_ADD") == 0) {
    status = PrintAdd(blob);
  } else if (std::strcmp(op, "QMCU_AVERAGE_POOL_2D") == 0) {
    status = PrintPool(blob);
  } else if (std::strcmp(op, "QMCU_PACK") == 0) {
    status = PrintRequant(blob, /*pack=*/true);
  } else if (std::strcmp(op, "QMCU_UNPACK") == 0) {
    status = PrintRequant(blob, /*pack=*/false);
  } else {
    std::fprintf(stderr, "unknown op %s\n", op);
    return kUsage;
  }
  if (status == kRejected) std::fprintf(stderr, "%s: options rejected\n", op);
  return status;
}
